"""The ring on plain memory: store, lookup, remove, expiry, eviction, torn records."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.shm import layout
from tests.unit.shm.conftest import ring

NOW = 1_000_000
DER = bytes(150)  # a TLS 1.2 session with a short SNI is ~121-150 bytes of DER


def sid(n: int) -> bytes:
    return n.to_bytes(4, "big") * 8


def test_stored_session_is_found() -> None:
    r = ring()
    assert r.store(sid(1), b"der-1", NOW + 300, NOW).stored
    assert r.lookup(sid(1), NOW) == b"der-1"
    assert r.lookup(sid(2), NOW) is None


def test_removed_session_is_gone() -> None:
    r = ring()
    r.store(sid(1), b"der-1", NOW + 300, NOW)
    assert r.remove(sid(1))
    assert r.lookup(sid(1), NOW) is None
    assert not r.remove(sid(1))


def test_session_expires_at_its_timeout() -> None:
    r = ring()
    r.store(sid(1), b"der-1", NOW + 300, NOW)
    assert r.lookup(sid(1), NOW + 299) == b"der-1"
    assert r.lookup(sid(1), NOW + 300) is None


def test_storing_an_id_again_replaces_it() -> None:
    r = ring()
    r.store(sid(1), b"old", NOW + 300, NOW)
    r.store(sid(1), b"new", NOW + 300, NOW)
    assert r.lookup(sid(1), NOW) == b"new"


def test_der_above_8k_and_bad_ids_are_not_cached() -> None:
    r = ring()
    assert not r.store(sid(1), bytes(layout.MAX_DER + 1), NOW + 300, NOW).stored
    assert r.store(sid(2), bytes(layout.MAX_DER), NOW + 300, NOW).stored
    assert not r.store(b"", b"x", NOW + 300, NOW).stored
    assert not r.store(bytes(33), b"x", NOW + 300, NOW).stored


def test_full_ring_drops_the_oldest_and_keeps_the_recent() -> None:
    r = ring(64 * 1024)
    evicted = 0
    for n in range(2000):
        evicted += r.store(sid(n), DER + n.to_bytes(4, "big"), NOW + 300, NOW).evicted
    assert evicted > 0 and r.stats().evictions == evicted
    assert r.lookup(sid(0), NOW) is None
    for n in range(1990, 2000):
        assert r.lookup(sid(n), NOW) == DER + n.to_bytes(4, "big")


def test_expired_sessions_are_not_counted_as_evictions() -> None:
    r = ring(64 * 1024)
    for n in range(2000):
        r.store(sid(n), DER, NOW + 1, NOW)
    evicted = sum(r.store(sid(n), DER, NOW + 300, NOW + 5).evicted for n in range(10_000, 10_100))
    assert evicted == 0


def test_capacity_is_at_least_4000_sessions_per_mib() -> None:
    r = ring(1 << 20)
    for n in range(10_000):
        r.store(sid(n), DER, NOW + 300, NOW)
    kept = sum(r.lookup(sid(n), NOW) is not None for n in range(10_000))
    # 1 MiB holds ~4,600 sessions of 150-byte DER (nginx: "1 MB ~ 4000"; ~2,700 on 64-bit).
    assert kept >= 4000, kept


def test_half_written_record_is_never_served() -> None:
    r = ring()
    r.store(sid(1), b"A" * 100, NOW + 300, NOW)
    head, _ = r._state()
    at = r.data + (head - layout.align(layout.RECORD.size + 32 + 100)) % r.capacity
    # A killed writer: the first half of another record's bytes over it, crc not updated.
    r.buf[at + 40 : at + 60] = os.urandom(20)
    assert r.lookup(sid(1), NOW) is None


def test_torn_state_empties_the_ring() -> None:
    r = ring()
    r.store(sid(1), b"der", NOW + 300, NOW)
    r.buf[layout.STATE_AT] ^= 0xFF
    assert r.lookup(sid(1), NOW) is None
    assert r.reset_count == 1
    assert r.store(sid(2), b"der", NOW + 300, NOW).stored
    assert r.lookup(sid(2), NOW) == b"der"


ops = st.lists(
    st.tuples(
        st.sampled_from(["store", "lookup", "remove", "tick"]),
        st.integers(0, 40),
        st.integers(1, 600),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_ring_agrees_with_a_dict(script: list[tuple[str, int, int]]) -> None:
    """Large enough never to evict: then the ring must behave exactly like a dict."""
    r = ring(256 * 1024)
    model: dict[bytes, tuple[bytes, int]] = {}
    now = NOW
    for op, n, arg in script:
        key = sid(n)
        if op == "store":
            der = os.urandom(arg % 300 + 1)
            r.store(key, der, now + arg, now)
            model[key] = (der, now + arg)
        elif op == "lookup":
            want = model.get(key)
            expect = want[0] if want is not None and want[1] > now else None
            assert r.lookup(key, now) == expect
        elif op == "remove":
            r.remove(key)
            model.pop(key, None)
        else:
            now += arg % 60
