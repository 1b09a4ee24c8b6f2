"""The zone lock: a POSIX record lock (``fcntl(F_SETLKW)``) on the segment's own descriptor.

The kernel drops a process's record locks when it exits, however it exits, so a worker killed
with SIGKILL while holding the lock releases it and the other workers carry on. (A
process-shared pthread mutex would stay locked; robust mutexes are not reachable from Python.)

Why not a SysV semaphore (what this was): a semaphore is found by a key, and ``semop()``
checks its permissions on every call. Workers that dropped to ``user`` then need the
semaphore given to that user, so any other process of that user could hold it (and hang
every worker) or remove it, and a key read from the shared header could name anybody's
semaphore. A record lock needs no name and no permission after ``open()``: the workers
inherit the master's descriptor of the master-owned segment across ``fork()`` and lock
through it, whatever user they then become, and nobody else can open the segment.

Record locks belong to a process, not to a descriptor: a process never waits for itself, and
closing *any* descriptor of the segment releases its locks, so a process opens a segment
once (``Registry`` keeps it).
"""

from __future__ import annotations

import fcntl
from types import TracebackType


class LockError(Exception):
    """The lock could not be taken (the text says why, with the system's error)."""


class Lock:
    """An exclusive lock on one open file, as a context manager."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> Lock:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)  # waits; EINTR is retried by Python
        except OSError as err:
            raise LockError(f"fcntl(F_SETLKW) failed ({err.errno}: {err.strerror})") from err
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)
