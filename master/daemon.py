"""``daemon on``: detach from the terminal the way init scripts expect."""

from __future__ import annotations

import os


def daemonize() -> None:
    """Double fork and ``setsid`` so the master is an orphan with no controlling terminal.

    The launching process exits 0 at once. The second fork makes sure the session leader
    is gone, so the daemon can never reacquire a terminal. stdin/stdout/stderr go to
    ``/dev/null``: from here on the error log is the only voice.
    """
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
