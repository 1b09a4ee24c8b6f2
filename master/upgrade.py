"""Binary upgrade on USR2: start the installed mailgate with this master's listening sockets.

nginx's protocol under mailgate's own name. The old master lists its listener descriptors in
``MAILGATE_FDS="3;4;"`` and starts the program on disk now with the argv it was started with
(``sys.executable`` plus ``sys.orig_argv``, so ``python -m mailgate.master -c ...`` and the
``mailgate`` script both re-run themselves and import the new code). The new master rebuilds
each socket with ``socket.socket(fileno=fd)`` (family and type come from the kernel) and binds
only the addresses it did not inherit.

The new master runs in a session of its own: Ctrl-C in the old master's terminal (``daemon
off``), or a supervisor signalling the old master's process group, must not stop it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterable, Mapping, MutableMapping

from mailgate.master.log import ErrorLog
from mailgate.worker.process import Listening

ENV_FDS = "MAILGATE_FDS"


def command_line() -> list[str]:
    """The argv that starts this program again from disk, as this master was started."""
    return [sys.executable, *sys.orig_argv[1:]]


def fds_value(listeners: Iterable[Listening]) -> str:
    """``"3;4;"``: every listener's descriptor, each followed by ``;`` (nginx's format)."""
    return "".join(f"{listening.sock.fileno()};" for listening in listeners)


def parse_fds(value: str, log: ErrorLog) -> list[int]:
    """The descriptors in a ``MAILGATE_FDS`` value; ``:`` separates too, as nginx accepts.

    A bad number ends the list with a warning and the rest is ignored, as in nginx.
    """
    fds: list[int] = []
    for part in value.replace(":", ";").split(";"):
        if not part:
            continue
        if not part.isdigit():
            log.emerg(
                f'invalid socket number "{part}" in {ENV_FDS} environment variable, '
                "ignoring the rest of the variable"
            )
            break
        fds.append(int(part))
    return fds


def inherited_sockets(
    environ: MutableMapping[str, str], log: ErrorLog
) -> list[socket.socket] | None:
    """The listening sockets an upgrading master passed down, or ``None`` on a cold start.

    The variable is removed from ``environ`` so that it never leaks into a later exec with
    stale numbers. Descriptors that are not listening stream sockets are skipped with a
    warning (an fd number reused by something else must not become a "listener").
    """
    value = environ.pop(ENV_FDS, None)
    if value is None:
        return None
    log.notice(f'using inherited sockets from "{value}"')
    sockets: list[socket.socket] = []
    for fd in parse_fds(value, log):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as err:
            log.warn(f"inherited descriptor {fd} is not a socket ({err.strerror}), ignored")
            continue
        if not _listening_stream(sock):
            log.warn(f"inherited descriptor {fd} is not a listening stream socket, ignored")
            sock.detach()  # not ours to close: it could be anything the launcher left open
            continue
        sock.setblocking(False)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def spawn_new_binary(
    argv: list[str], listeners: Iterable[Listening], environ: Mapping[str, str]
) -> int:
    """Start the new master with the listeners in ``MAILGATE_FDS``; returns its pid.

    ``posix_spawn`` rather than ``fork()`` + ``exec()``: no Python code runs in the child
    (this master has signal handlers and a wakeup fd a forked child would share), and an
    exec failure comes back here as ``OSError``. The child gets its own session and the
    default disposition and an empty mask for every signal the master handles, since a
    blocked mask survives exec. Raises ``OSError``.
    """
    listeners = list(listeners)
    for listening in listeners:
        listening.sock.set_inheritable(True)  # PEP 446: close-on-exec unless told otherwise
    env = dict(environ)
    env[ENV_FDS] = fds_value(listeners)
    handled = [sig for sig in signal.Signals if sig not in (signal.SIGKILL, signal.SIGSTOP)]
    return os.posix_spawn(
        argv[0],
        argv,
        env,
        setsid=True,
        setsigmask=(),
        setsigdef=handled,
    )


def _listening_stream(sock: socket.socket) -> bool:
    with contextlib.suppress(OSError):
        return (
            sock.type == socket.SOCK_STREAM
            and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        )
    return False
