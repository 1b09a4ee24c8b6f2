"""Listening sockets: one per distinct ``listen`` address, with its parameters applied.

Unlike nginx, which binds a wildcard address once and tells servers apart by the accepted
socket's local address, mailgate binds every listen address separately (``0.0.0.0:993`` and
``127.0.0.1:993`` are two sockets; the kernel picks the most specific one for a connection).
Sockets are non-blocking and inheritable, so a later binary upgrade can pass them by exec.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Iterable, Iterator, Sequence

from mailgate.config import model
from mailgate.master.log import ErrorLog, os_error
from mailgate.worker.process import Listening

IPPROTO_MPTCP = 262  # not in Python's socket module before 3.12
_NO_MPTCP = frozenset({errno.EPROTONOSUPPORT, errno.EINVAL, errno.ENOPROTOOPT, errno.EAFNOSUPPORT})

Key = tuple[int, str, int]  # (family, host or path, port): what makes two listens one socket


class BindError(Exception):
    """Opening a listener failed; ``str()`` is nginx's message, e.g. ``bind() to ... failed``."""


def key(listen: model.Listen) -> Key:
    return (int(listen.family), _normal_host(listen.family, listen.host), listen.port)


def sockaddr_key(sock: socket.socket) -> Key:
    """The key of a socket's bound address, as ``key()`` gives it for a ``listen``."""
    addr = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = addr.decode() if isinstance(addr, bytes) else str(addr)
        return (int(socket.AF_UNIX), path, 0)
    return (int(sock.family), _normal_host(sock.family, addr[0]), int(addr[1]))


def open_all(
    config: model.Config, log: ErrorLog, inherited: Sequence[socket.socket] = ()
) -> list[Listening]:
    """Every distinct listen address of ``config``, with nothing bound twice.

    ``inherited`` are the sockets a binary upgrade passed down: each one whose address a
    ``listen`` names is used as is (its parameters re-applied), the others are closed, and
    only the addresses left over are bound. On error what was bound here is closed.
    """
    by_key = {sockaddr_key(sock): sock for sock in inherited}
    opened: list[Listening] = []
    fresh: list[Listening] = []
    try:
        for listen, server in _distinct(config):
            sock = by_key.pop(key(listen), None)
            if sock is None:
                fresh.append(Listening(open_socket(listen, log), listen, server))
                opened.append(fresh[-1])
            else:
                opened.append(Listening(sock, listen, server))
    except BindError:
        close_all(fresh)
        raise
    for listening in opened:
        if listening not in fresh:
            _reapply(listening.sock, None, listening.listen, log)
    for sock in by_key.values():
        # The old master still listens there: never unlink a unix socket file of its.
        log.notice(f"closing inherited socket {_describe(sock)}: no listen names it")
        sock.close()
    return opened


def reuse_or_open(config: model.Config, current: list[Listening], log: ErrorLog) -> list[Listening]:
    """The listeners of a new generation: sockets reused by address, new addresses bound.

    A kept socket is never closed, so no connect is refused during a reload; its changed
    parameters are applied once every new address is bound (a bind error leaves the running
    generation's sockets untouched): ``listen()`` again for the backlog (as nginx does),
    ``setsockopt()`` for buffers and keepalive. ``ipv6only`` and ``multipath`` cannot change
    on a bound socket; that is logged. On a bind error the sockets opened here are closed.
    """
    by_key = {key(listening.listen): listening for listening in current}
    result: list[Listening] = []
    fresh: list[Listening] = []
    kept: list[tuple[Listening, model.Listen]] = []
    try:
        for listen, server in _distinct(config):
            old = by_key.get(key(listen))
            if old is None:
                fresh.append(Listening(open_socket(listen, log), listen, server))
                result.append(fresh[-1])
                continue
            result.append(Listening(old.sock, listen, server))
            kept.append((old, listen))
    except BindError:
        close_all(fresh)
        raise
    for old, listen in kept:
        if _parameters(old.listen) != _parameters(listen):
            _reapply(old.sock, old.listen, listen, log)
    return result


def open_socket(listen: model.Listen, log: ErrorLog) -> socket.socket:
    """A bound, listening, non-blocking, inheritable socket for ``listen``."""
    sock = _new_socket(listen, log)
    try:
        _set_options(sock, listen)
    except OSError as err:
        # nginx too carries on without an option the kernel refuses.
        log.alert(f"setsockopt() on {listen.text} failed ({os_error(err)}), ignored")
    try:
        if listen.family == socket.AF_UNIX:
            _unlink_stale(listen.host)
        try:
            sock.bind(listen.sockaddr)
        except OSError as err:
            raise BindError(f"bind() to {listen.text} failed ({os_error(err)})") from err
        sock.listen(listen.backlog)
    except BindError:
        sock.close()
        raise
    except OSError as err:
        sock.close()
        raise BindError(f"listen() to {listen.text} failed ({os_error(err)})") from err
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def close_all(listeners: Iterable[Listening], unlink: bool = True) -> None:
    """Close ``listeners``; unix socket files are removed unless an upgrade still needs them."""
    for listening in listeners:
        listening.sock.close()
        if unlink and listening.listen.family == socket.AF_UNIX:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listening.listen.host)


def _distinct(config: model.Config) -> Iterator[tuple[model.Listen, model.ServerConfig]]:
    # The first server naming an address owns it (the config layer rejects real duplicates).
    seen: set[Key] = set()
    for server in config.servers:
        for listen in server.listens:
            if key(listen) not in seen:
                seen.add(key(listen))
                yield listen, server


def _parameters(listen: model.Listen) -> tuple[object, ...]:
    return (
        listen.backlog,
        listen.rcvbuf,
        listen.sndbuf,
        listen.ipv6only,
        listen.so_keepalive,
        listen.multipath,
    )


def _new_socket(listen: model.Listen, log: ErrorLog) -> socket.socket:
    if listen.multipath and listen.family != socket.AF_UNIX:
        try:
            return socket.socket(listen.family, socket.SOCK_STREAM, IPPROTO_MPTCP)
        except OSError as err:
            if err.errno not in _NO_MPTCP:
                raise BindError(f"socket() {listen.text} failed ({os_error(err)})") from err
            log.warn(f"multipath is not supported on this platform, ignored ({listen.text})")
    try:
        return socket.socket(listen.family, socket.SOCK_STREAM)
    except OSError as err:
        raise BindError(f"socket() {listen.text} failed ({os_error(err)})") from err


def _set_options(sock: socket.socket, listen: model.Listen) -> None:
    if listen.family == socket.AF_UNIX:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _set_nodelay(sock)
    if listen.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(listen.ipv6only))
    if listen.rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, listen.rcvbuf)
    if listen.sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, listen.sndbuf)
    if listen.so_keepalive is not None:
        _set_keepalive(sock, listen.so_keepalive)


def _set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY on the listener: Linux copies it into each accepted socket, which saves a
    worker one system call per connection. A kernel that refuses it (MPTCP on an old one)
    leaves the worker to set it per connection instead, so a failure is not an alert."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _set_keepalive(sock: socket.socket, keepalive: model.KeepAlive) -> None:
    # Accepted sockets inherit these from the listener on Linux, as nginx relies on.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(keepalive.on))
    for option, value in (
        (socket.TCP_KEEPIDLE, keepalive.idle),
        (socket.TCP_KEEPINTVL, keepalive.interval),
        (socket.TCP_KEEPCNT, keepalive.count),
    ):
        if value is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _unlink_stale(path: str) -> None:
    # A socket file left by a crashed master would make bind() fail with EADDRINUSE.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


def _reapply(
    sock: socket.socket, old: model.Listen | None, new: model.Listen, log: ErrorLog
) -> None:
    # ``old`` None: an inherited socket whose parameters are unknown, so set them all.
    if new.family == socket.AF_UNIX:
        if old is None or old.backlog != new.backlog:
            _relisten(sock, new, log)
        return
    fixed = [
        name
        for name in ("ipv6only", "multipath")
        if old is not None and getattr(old, name) != getattr(new, name)
    ]
    if old is None and new.multipath != (_protocol(sock) == IPPROTO_MPTCP):
        fixed.append("multipath")
    if fixed:
        log.warn(
            f'the "{", ".join(fixed)}" parameter of listen {new.text} cannot change on an open '
            "socket, ignored; restart to apply it"
        )
    try:
        if old is None or (old.rcvbuf, old.sndbuf) != (new.rcvbuf, new.sndbuf):
            _set_buffers(sock, old, new, log)
        if old is None or old.so_keepalive != new.so_keepalive:
            _set_keepalive(sock, new.so_keepalive or model.KeepAlive(on=False))
    except OSError as err:
        log.alert(f"setsockopt() on {new.text} failed ({os_error(err)}), ignored")
    if old is None:
        _set_nodelay(sock)  # an older binary's socket may lack it
    if old is None or old.backlog != new.backlog:
        _relisten(sock, new, log)
    if old is not None:
        log.notice(f"the parameters of listen {new.text} were re-applied")


def _set_buffers(
    sock: socket.socket, old: model.Listen | None, new: model.Listen, log: ErrorLog
) -> None:
    for name, option in (("rcvbuf", socket.SO_RCVBUF), ("sndbuf", socket.SO_SNDBUF)):
        value: int | None = getattr(new, name)
        if value is not None:
            sock.setsockopt(socket.SOL_SOCKET, option, value)
        elif old is not None and getattr(old, name) is not None:
            # The kernel has no "back to the default" for these; only a fresh socket has it.
            log.warn(f'the "{name}" of listen {new.text} cannot be unset on an open socket')


def _relisten(sock: socket.socket, listen: model.Listen, log: ErrorLog) -> None:
    # Linux takes a second listen() on a listening socket as a new backlog; no connection
    # in the accept queue is lost.
    try:
        sock.listen(listen.backlog)
    except OSError as err:
        log.alert(f"listen() to {listen.text}, backlog {listen.backlog} failed ({os_error(err)})")


def _protocol(sock: socket.socket) -> int:
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
    except OSError:
        return 0


def _normal_host(family: int, host: str) -> str:
    # "::1" and "0:0::1" are one address; getsockname() prints the short form.
    if family == socket.AF_UNIX:
        return host
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, host))
    except (OSError, ValueError):
        return host


def _describe(sock: socket.socket) -> str:
    family, host, port = sockaddr_key(sock)
    if family == socket.AF_UNIX:
        return f"unix:{host}"
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
