"""The worker's event loop: a readiness registry (epoll) plus a heap of timers.

Register with ``loop.selector.register(sock, EVENT_READ, callback)`` and the loop calls
``callback(mask)`` (see :mod:`mailgate.worker.io.poller`).
Connections that outlive the accept call (sessions) ``track`` themselves so the worker can
enforce ``worker_connections`` and know when a graceful shutdown is done.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailgate.worker.io.poller import EpollRegistry

TimerCallback = Callable[[], None]
# Called with the exception and the object the failing callback was bound to (if any).
ErrorHandler = Callable[[Exception, object], None]


# The heap is rebuilt without its cancelled timers once they are more than half of it (and at
# least this many): every closed session cancels one, mostly long before its due time.
COMPACT_AFTER = 1024


def _cancelled() -> None:
    """What a cancelled timer holds instead of its callback."""


def _reraise(err: Exception, owner: object) -> None:
    raise err


def drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (signal.set_wakeup_fd): its bytes only mean "look"."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            continue


class Connection(Protocol):
    """What the worker needs from a live connection: a way to end it."""

    def close(self) -> None:
        """Close the connection now (shutdown timeout, fast stop) and untrack it."""


@dataclass(order=True, slots=True)
class Timer:
    """A pending ``call_later``; ordered by due time, then by creation."""

    when: float
    seq: int
    callback: TimerCallback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Loop:
    """One selector, one timer heap, and the set of live connections."""

    def __init__(self, on_error: ErrorHandler = _reraise) -> None:
        self.selector = EpollRegistry()
        # A bug in one connection's callback must not end the loop and every other connection.
        self.on_error = on_error
        self.connections: set[Connection] = set()
        self._timers: list[Timer] = []
        self._cancelled = 0  # cancelled timers still in the heap
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: TimerCallback) -> Timer:
        """Run ``callback`` once, ``delay`` seconds from now."""
        timer = Timer(time.monotonic() + delay, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def cancel(self, timer: Timer) -> None:
        """Forget ``timer``; it is dropped lazily when it reaches the top of the heap."""
        if timer.cancelled:
            return
        timer.cancelled = True
        # The callback is usually a bound method of a session: a cancelled timer waits in the
        # heap until its due time (the session timeout), and must not keep the session alive.
        timer.callback = _cancelled
        self._cancelled += 1
        if self._cancelled > COMPACT_AFTER and self._cancelled * 2 > len(self._timers):
            self._timers = [t for t in self._timers if not t.cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0

    def track(self, conn: Connection) -> None:
        self.connections.add(conn)

    def untrack(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def run_once(self, max_wait: float | None = None) -> None:
        """Wait for readiness or the next timer (at most ``max_wait``), then run what is due."""
        for callback, mask in self.selector.select(self._wait_time(max_wait)):
            try:
                callback(mask)
            except Exception as err:
                self.on_error(err, getattr(callback, "__self__", None))
        self._run_due_timers()

    def close(self) -> None:
        self.selector.close()
        self._timers.clear()

    def _wait_time(self, max_wait: float | None) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
            self._cancelled -= 1
        if not self._timers:
            return max_wait
        until_timer = self._timers[0].when - time.monotonic()
        if max_wait is not None and max_wait < until_timer:
            return max_wait
        return until_timer if until_timer > 0.0 else 0.0

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].when <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                self._cancelled -= 1
            else:
                timer.cancelled = True  # ran: a later cancel() has nothing to forget
                try:
                    timer.callback()
                except Exception as err:
                    self.on_error(err, getattr(timer.callback, "__self__", None))
