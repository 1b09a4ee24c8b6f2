"""A worker's deferred metric writes: nothing reaches prometheus_client until a flush."""

from __future__ import annotations

import pytest

from mailgate.worker.observe import batching, metrics


def value(child: object) -> float:
    return float(child._value.get())  # type: ignore[attr-defined]


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "_deferred", True)
    monkeypatch.setattr(batching, "_pending", {})
    monkeypatch.setattr(batching, "_closes", {})
    monkeypatch.setattr(batching, "_observed", [])
    monkeypatch.setattr(batching, "_next_flush", 0.0)


@pytest.mark.usefixtures("deferred")
def test_events_wait_for_the_flush_and_then_add_up() -> None:
    m = metrics.ListenerMetrics("127.0.0.1:19993", "imap")
    fam = metrics.families()
    accepted = fam.accepted.labels("127.0.0.1:19993", "imap")
    active = fam.active.labels("127.0.0.1:19993", "imap")
    proxied = fam.sessions.labels("127.0.0.1:19993", "imap", "proxied")
    full = fam.handshakes.labels("127.0.0.1:19993", "ok", "TLSv1.3", "full")
    before = [value(c) for c in (accepted, active, proxied, full)]
    for _ in range(3):
        m.accepted()
        m.handshake(True, "TLSv1.3", "full", 0.002)
    m.closed("proxied")
    m.closed("proxied")
    # Accepted connections are written at once; everything else waits.
    assert value(accepted) == before[0] + 3
    assert [value(c) for c in (active, proxied, full)] == before[1:]
    batching.flush_due()
    assert value(active) == before[1] + 1
    assert value(proxied) == before[2] + 2
    assert value(full) == before[3] + 3
    assert not batching._pending and not batching._closes and not batching._observed


def bucket_counts(histogram: object) -> list[float]:
    return [float(b.get()) for b in histogram._buckets]  # type: ignore[attr-defined]


def test_timings_observed_together_fill_the_same_buckets_as_one_by_one() -> None:
    from prometheus_client import Histogram

    one_by_one, together = (
        Histogram(f"t_{name}", "t", buckets=metrics.HANDSHAKE_BUCKETS, registry=None)
        for name in ("one", "together")
    )
    timings = [0.0001, 0.002, 0.002, 0.05, 0.3, 7.0, 120.0, 0.0]
    for seconds in timings:
        one_by_one.observe(seconds)
    batching._observe_all(together, timings)
    assert bucket_counts(together) == bucket_counts(one_by_one)
    assert float(together._sum.get()) == pytest.approx(sum(timings))  # type: ignore[attr-defined]
