"""The zone lock: one SysV semaphore, always operated with ``SEM_UNDO``.

The kernel undoes a process's semaphore operations when it exits, however it exits, so a worker
killed with SIGKILL while holding the lock releases it and the other workers carry on. (A
process-shared pthread mutex would stay locked; robust mutexes are not reachable from Python.)
"""

from __future__ import annotations

import contextlib
from types import TracebackType

import sysv_ipc


class LockError(Exception):
    """The semaphore could not be created or found."""


class Lock:
    """A binary semaphore as a context manager."""

    def __init__(self, sem: sysv_ipc.Semaphore) -> None:
        sem.undo = True  # every acquire/release is undone if this process dies
        self._sem = sem

    @classmethod
    def create(cls) -> Lock:
        """A new semaphore with a key the kernel has not handed out (stored in the header)."""
        try:
            return cls(sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, mode=0o600, initial_value=1))
        except sysv_ipc.Error as err:
            raise LockError(f"semget() failed ({err})") from err

    @classmethod
    def open(cls, key: int) -> Lock | None:
        """The semaphore with ``key``, or ``None`` when it is gone."""
        try:
            return cls(sysv_ipc.Semaphore(key))
        except (sysv_ipc.ExistentialError, sysv_ipc.PermissionsError):
            return None

    @property
    def key(self) -> int:
        key: int = self._sem.key
        return key

    def __enter__(self) -> Lock:
        try:
            self._sem.acquire()
        except sysv_ipc.Error as err:  # removed: the zone was released (a stop)
            raise LockError(f"semop() failed ({err})") from err
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sem.release()

    def remove(self) -> None:
        with contextlib.suppress(sysv_ipc.ExistentialError, sysv_ipc.PermissionsError):
            self._sem.remove()
