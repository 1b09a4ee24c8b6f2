"""The prometheus_client private parts that ``observe/batching.py`` reads are still there.

batching falls back to the public calls when a release renames them, so nothing would break:
the worker would only lose the time the shortcuts save. These tests fail instead, so an
upgrade of prometheus_client is noticed and batching is brought up to date.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from mailgate.worker.observe import batching, metrics


def test_a_histogram_child_has_the_bounds_buckets_and_sum_batching_adds_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    histogram = Histogram("t_parts", "t", buckets=metrics.HANDSHAKE_BUCKETS, registry=None)

    def one_by_one(amount: float) -> None:
        raise AssertionError("batching fell back to observe(): the private parts moved")

    monkeypatch.setattr(histogram, "observe", one_by_one)
    batching._observe_all(histogram, [0.002, 0.3])
    buckets = [float(b.get()) for b in histogram._buckets]
    assert sum(buckets) == 2
    assert float(histogram._sum.get()) == pytest.approx(0.302)


def test_a_counter_child_keeps_its_value_where_at_once_finds_it() -> None:
    assert hasattr(Counter("t_value", "t", registry=None), "_value")


def test_at_once_writes_a_multiprocess_value_straight_into_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(batching, "_deferred", True)
    counter = Counter("t_direct", "t", registry=None)
    # What ``values.ValueClass`` is in a worker (chosen at import, so made here by hand).
    mmaped = values.MultiProcessValue(lambda: 4242)  # type: ignore[no-untyped-call]
    counter._value = mmaped("counter", "t_direct", "t_direct_total", (), (), "t")
    at_once = batching.AtOnce(counter)
    at_once.inc()  # the ordinary inc(); it finds the parts for the next one
    assert at_once._direct is counter._value, "the multiprocess value's parts moved"
    at_once.inc()
    at_once.inc()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert registry.get_sample_value("t_direct_total") == 3.0
