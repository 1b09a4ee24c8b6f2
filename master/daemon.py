"""``daemon on``: detach from the terminal the way init scripts expect."""

from __future__ import annotations

import os
from collections.abc import Callable

READY = b"1"


def daemonize() -> Callable[[bool], None]:
    """Double fork and ``setsid`` so the master is an orphan with no controlling terminal.

    Returns ``ready(ok)``, which the daemon calls once the pid file is written (or start-up
    failed). The launching process waits for it and exits 0 only then, so an init script or
    systemd's ``Type=forking`` that reads the pid file right after the launcher exits finds
    it (nginx's launcher exits at once, and systemd logs "PID file not readable (yet?)").
    The second fork makes sure the session leader is gone, so the daemon can never reacquire
    a terminal. stdin/stdout/stderr go to ``/dev/null``: from here on the error log is the
    only voice.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        _exit_when_ready(read_end)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    # os.pipe() is close-on-exec: a new binary never holds it; ready() runs before any fork.

    def ready(ok: bool) -> None:
        if ok:
            os.write(write_end, READY)
        os.close(write_end)

    return ready


def _exit_when_ready(read_end: int) -> None:
    # EOF without the byte: the daemon failed before its pid file existed (it logged why).
    try:
        answer = os.read(read_end, 1)
    except OSError:
        answer = b""
    os._exit(0 if answer == READY else 1)
