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
from collections.abc import Iterable, Iterator

from mailgate.config import model
from mailgate.master.log import ErrorLog, os_error
from mailgate.worker.process import Listening

IPPROTO_MPTCP = 262  # not in Python's socket module before 3.12
_NO_MPTCP = frozenset({errno.EPROTONOSUPPORT, errno.EINVAL, errno.ENOPROTOOPT, errno.EAFNOSUPPORT})

Key = tuple[int, str, int]  # (family, host or path, port): what makes two listens one socket


class BindError(Exception):
    """Opening a listener failed; ``str()`` is nginx's message, e.g. ``bind() to ... failed``."""


def key(listen: model.Listen) -> Key:
    return (int(listen.family), listen.host, listen.port)


def open_all(config: model.Config, log: ErrorLog) -> list[Listening]:
    """Bind every distinct listen address of ``config``; on error close what was opened."""
    opened: list[Listening] = []
    try:
        for listen, server in _distinct(config):
            opened.append(Listening(open_socket(listen, log), listen, server))
    except BindError:
        close_all(opened)
        raise
    return opened


def reuse_or_open(config: model.Config, current: list[Listening], log: ErrorLog) -> list[Listening]:
    """The listeners of a new generation: sockets reused by address, new addresses bound.

    The parameters of a reused socket are not re-applied yet (nginx re-runs ``listen()`` for a
    changed backlog); that is logged. On a bind error the sockets opened here are closed.
    """
    by_key = {key(listening.listen): listening for listening in current}
    result: list[Listening] = []
    fresh: list[Listening] = []
    try:
        for listen, server in _distinct(config):
            old = by_key.get(key(listen))
            if old is None:
                fresh.append(Listening(open_socket(listen, log), listen, server))
                result.append(fresh[-1])
                continue
            if _parameters(old.listen) != _parameters(listen):
                log.notice(
                    f"the parameters of listen {listen.text} changed; "
                    "reload does not re-apply them yet, restart to apply them"
                )
            result.append(Listening(old.sock, listen, server))
    except BindError:
        close_all(fresh)
        raise
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
    if listen.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(listen.ipv6only))
    if listen.rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, listen.rcvbuf)
    if listen.sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, listen.sndbuf)
    if listen.so_keepalive is not None:
        _set_keepalive(sock, listen.so_keepalive)


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
