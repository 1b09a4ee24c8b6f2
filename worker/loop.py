"""The worker's event loop: ``selectors.DefaultSelector`` plus a heap of timers.

Readiness callbacks live in ``SelectorKey.data``: register with
``loop.selector.register(sock, EVENT_READ, callback)`` and the loop calls ``callback(mask)``.
Connections that outlive the accept call (sessions) ``track`` themselves so the worker can
enforce ``worker_connections`` and know when a graceful shutdown is done.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

ReadyCallback = Callable[[int], None]
TimerCallback = Callable[[], None]
# Called with the exception and the object the failing callback was bound to (if any).
ErrorHandler = Callable[[Exception, object], None]


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
        self.selector = selectors.DefaultSelector()
        # A bug in one connection's callback must not end the loop and every other connection.
        self.on_error = on_error
        self.connections: set[Connection] = set()
        self._timers: list[Timer] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: TimerCallback) -> Timer:
        """Run ``callback`` once, ``delay`` seconds from now."""
        timer = Timer(time.monotonic() + delay, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def cancel(self, timer: Timer) -> None:
        """Forget ``timer``; it is dropped lazily when it reaches the top of the heap."""
        timer.cancelled = True

    def track(self, conn: Connection) -> None:
        self.connections.add(conn)

    def untrack(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def run_once(self, max_wait: float | None = None) -> None:
        """Wait for readiness or the next timer (at most ``max_wait``), then run what is due."""
        for key, mask in self.selector.select(self._wait_time(max_wait)):
            callback: ReadyCallback = key.data
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
        if not self._timers:
            return max_wait
        until_timer = max(0.0, self._timers[0].when - time.monotonic())
        return until_timer if max_wait is None else min(until_timer, max_wait)

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].when <= now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                try:
                    timer.callback()
                except Exception as err:
                    self.on_error(err, getattr(timer.callback, "__self__", None))
