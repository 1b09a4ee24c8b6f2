"""A worker's deferred metric writes, and every use of prometheus_client's private parts.

Hot path: a prometheus_client multiprocess ``inc()`` takes a lock, checks the pid and packs
the value into the mmapped file, about 2 µs warm and several times that cold; a session makes
eight to twelve of them. A worker therefore adds its per-connection events up in a plain
dict and writes the sums at most once per ``FLUSH_INTERVAL`` (from its loop, and when it
stops), so a scrape is exact up to that delay. Outside a worker (tests, tools) writes stay
immediate.

Two shortcuts read prometheus_client's private attributes: :func:`_observe_all` (a
histogram's bounds, buckets and sum) and :class:`AtOnce` (a multiprocess value's float, file
and key). Both live here and nowhere else, each falls back to the public call when a release
renames those parts, and ``tests/unit/worker/observe/test_metrics_privates.py`` fails when
the installed release no longer has them (the fallback would silently cost the time saved).
"""

from __future__ import annotations

import bisect
import time
from typing import Any, Protocol

FLUSH_INTERVAL = 1.0  # seconds a per-connection event may wait before it is in the files


class Incrementable(Protocol):
    """A counter or gauge child, as prometheus_client makes them."""

    def inc(self, amount: float = ...) -> None: ...


class Observable(Protocol):
    """A histogram child, as prometheus_client makes them."""

    def observe(self, amount: float) -> None: ...


_deferred = False
_pending: dict[Incrementable, float] = {}  # counter or gauge child -> amount not written yet
_closes: dict[Incrementable, float] = {}  # sessions_total children: written last, see flush()
_observed: list[tuple[Observable, float]] = []  # (histogram child, value) not observed yet
_next_flush = 0.0


def defer_writes() -> None:
    """From now on (in this worker) add events up and write them in :func:`flush_due`."""
    global _deferred
    _deferred = True


def inc(child: Incrementable, amount: float = 1.0) -> None:
    """``child.inc(amount)``, deferred in a worker."""
    if _deferred:
        _pending[child] = _pending.get(child, 0.0) + amount
    else:
        child.inc(amount)


def observe(child: Observable, value: float) -> None:
    """``child.observe(value)``, deferred in a worker."""
    if _deferred:
        _observed.append((child, value))
    else:
        child.observe(value)


def inc_last(child: Incrementable) -> None:
    """``child.inc()`` for a session that ended: deferred in a worker, and then written after
    every other deferred event (see :func:`flush`)."""
    if _deferred:
        _closes[child] = _closes.get(child, 0.0) + 1.0
    else:
        child.inc()


def flush() -> None:
    """Write every deferred event now (a gauge's +1/-1 that cancelled out writes nothing).

    Connections accepted are written at once and the sessions that ended last, so a scrape
    that sees as many sessions ended as accepted also sees every event of those sessions."""
    pending = list(_pending.items())
    _pending.clear()
    for child, amount in pending:
        if amount:
            child.inc(amount)
    observed = _observed[:]
    _observed.clear()
    by_child: dict[Observable, list[float]] = {}
    for histogram, value in observed:
        by_child.setdefault(histogram, []).append(value)
    for histogram, values in by_child.items():
        _observe_all(histogram, values)
    closes = list(_closes.items())
    _closes.clear()
    for child, amount in closes:
        child.inc(amount)


def flush_due() -> None:
    """Called once per loop turn: flush if something waits and the interval has passed."""
    global _next_flush
    if not (_pending or _observed or _closes):
        return
    now = time.monotonic()
    if now >= _next_flush:
        _next_flush = now + FLUSH_INTERVAL
        flush()


# -- prometheus_client's private parts: this file only ----------------------------------------


def _observe_all(child: Observable, values: list[float]) -> None:
    """``child.observe(v)`` for every value, with one write per bucket instead of two per value.

    Histogram.observe() adds to the sum and to the first bucket whose bound is not below the
    value; in multiprocess mode each add is a locked write into the mmapped file. This does
    the same adds summed up. It reads the histogram's own parts, so if a prometheus_client
    release renames them, it falls back to observing one value at a time."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            child.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1  # the last bound is +Inf
    total.inc(sum(values))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def _direct_value(child: Incrementable) -> Any:
    """The multiprocess value behind ``child`` if it has the parts :class:`AtOnce` writes
    through (its float, its mmapped file and its key there), else None."""
    value = getattr(child, "_value", None)
    if all(hasattr(value, name) for name in ("_value", "_file", "_key")):
        return value
    return None


class AtOnce:
    """A counter child whose ``inc()`` reaches the file at once, cheaply in a worker.

    prometheus_client's multiprocess ``inc()`` takes a lock and calls ``getpid()`` (a system
    call) on every write, to notice a fork. A worker runs one thread and never forks after its
    first write (``metrics.process_started``), so from its second write on this adds to the
    value and writes it into the mmapped file directly. Before that, outside a worker, or if a
    prometheus_client release renames these parts, it is the ordinary ``inc()``.
    """

    __slots__ = ("_child", "_direct")

    def __init__(self, child: Incrementable) -> None:
        self._child = child
        self._direct: Any = None

    def inc(self) -> None:
        direct = self._direct
        if direct is not None:
            direct._value += 1.0
            direct._file.write_value(direct._key, direct._value, 0.0)
            return
        self._child.inc()
        if _deferred:
            self._direct = _direct_value(self._child)
