"""The worker's readiness registry: ``select.epoll`` with a callback per file descriptor.

It has the shape of ``selectors.EpollSelector`` as the loop uses it (``register``,
``modify``, ``unregister``, ``get_map``, ``select``), without what the loop never needs: a
``SelectorKey`` tuple built for every register and modify, the abstract base's bookkeeping,
and a second lookup per ready descriptor. Every connection registers, modifies and
unregisters a few times, so that bookkeeping was a visible share of a TLS handshake's Python
time. mailgate runs on Linux only (epoll, pre-fork), so there is no other backend.
"""

from __future__ import annotations

import contextlib
import math
import select
import selectors
from collections.abc import Callable, Mapping
from typing import Any

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

Callback = Callable[[int], None]
FileLike = Any  # a socket or anything with fileno(), or a descriptor number


def _fd(fileobj: FileLike) -> int:
    fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return int(fd)


class EpollRegistry:
    """epoll, with ``(fileobj, events, callback)`` kept per descriptor."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._fds: dict[int, tuple[FileLike, int, Callback]] = {}
        # EVENT_READ/EVENT_WRITE masks (0-3) to epoll's bits.
        self._to_epoll = (0, select.EPOLLIN, select.EPOLLOUT, select.EPOLLIN | select.EPOLLOUT)

    def register(self, fileobj: FileLike, events: int, data: Callback) -> None:
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fd(fileobj)
        if fd in self._fds:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        self._epoll.register(fd, self._to_epoll[events])
        self._fds[fd] = (fileobj, events, data)

    def modify(self, fileobj: FileLike, events: int, data: Callback) -> None:
        fd = self._lookup(fileobj)
        if fd not in self._fds:
            raise KeyError(f"{fileobj!r} is not registered")
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if events != self._fds[fd][1]:
            self._epoll.modify(fd, self._to_epoll[events])
        self._fds[fd] = (fileobj, events, data)

    def unregister(self, fileobj: FileLike) -> None:
        fd = self._lookup(fileobj)
        if self._fds.pop(fd, None) is None:
            raise KeyError(f"{fileobj!r} is not registered")
        # Closed since it was registered: the kernel forgot it already.
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)

    def forget(self, fileobj: FileLike) -> None:
        """Stop watching a socket that is closed next, without telling the kernel: closing the
        last descriptor of a file removes it from epoll anyway (one system call less)."""
        fd = self._lookup(fileobj)
        if self._fds.pop(fd, None) is None:
            raise KeyError(f"{fileobj!r} is not registered")

    def get_map(self) -> Mapping[Any, object]:
        return self._fds

    def select(self, timeout: float | None) -> list[tuple[Callback, int]]:
        # epoll's timeout is in milliseconds: round up, or a timer due in 0.3 ms would spin.
        if timeout is None:
            wait = -1.0
        elif timeout > 0.0:
            wait = math.ceil(timeout * 1e3) * 1e-3
        else:
            wait = 0.0
        try:
            ready = self._epoll.poll(wait, len(self._fds) or 1)
        except InterruptedError:
            return []
        fds = self._fds
        found = []
        for fd, bits in ready:
            entry = fds.get(fd)
            if entry is None:
                continue
            # As selectors does: an error or hang-up wakes both directions that are watched.
            mask = 0
            if bits & ~select.EPOLLIN:
                mask |= EVENT_WRITE
            if bits & ~select.EPOLLOUT:
                mask |= EVENT_READ
            mask &= entry[1]
            if mask:
                found.append((entry[2], mask))
        return found

    def close(self) -> None:
        self._epoll.close()
        self._fds.clear()

    def _lookup(self, fileobj: FileLike) -> int:
        try:
            return _fd(fileobj)
        except ValueError:
            # A socket closed while registered has fileno() -1: find it by identity.
            for fd, entry in self._fds.items():
                if entry[0] is fileobj:
                    return fd
            raise
