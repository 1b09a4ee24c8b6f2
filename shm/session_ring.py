"""The session ring: TLS sessions by ID in one segment, oldest overwritten first.

The byte layout is in :mod:`mailgate.shm.layout`. Nothing here locks: :class:`~mailgate.shm.
zones.Zone` holds the zone's lock around every call. Every read of a record is checked
(its own position, its lengths, its crc32), so a record that a killed worker left half-written,
or that a later record overwrote, is a miss and never a session.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from mailgate.shm import layout
from mailgate.shm.layout import ENTRY, RECORD, STATE, STATS, WAYS

Buffer = Any  # a writable buffer: the mmap of a segment, or a bytearray in tests


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters kept in the segment, for ``make bench`` and the tests."""

    stores: int
    hits: int
    misses: int
    evictions: int
    removes: int


@dataclass(frozen=True, slots=True)
class Stored:
    """What :meth:`SessionRing.store` did."""

    stored: bool
    evicted: int  # unexpired sessions dropped to make room (nginx warns about those)


@dataclass(frozen=True, slots=True)
class _Record:
    sid: bytes
    der: bytes
    expire: int
    size: int  # bytes it occupies in the ring, aligned


class SessionRing:
    """Store, look up and remove sessions in ``buf`` laid out by :func:`initialise`."""

    def __init__(self, buf: Buffer, data_offset: int, capacity: int, buckets: int) -> None:
        self.buf = buf
        self.data = data_offset
        self.capacity = capacity
        self.buckets = buckets
        self.reset_count = 0  # the state block was torn and the ring emptied (the zone logs it)

    # -- state ---------------------------------------------------------------------------

    def _state(self) -> tuple[int, int]:
        head, tail, crc = STATE.unpack_from(self.buf, layout.STATE_AT)
        if crc != zlib.crc32(STATE.pack(head, tail, 0)[:16]):
            self.reset_count += 1
            self.clear()
            return 0, 0
        return head, tail

    def _set_state(self, head: int, tail: int) -> None:
        crc = zlib.crc32(STATE.pack(head, tail, 0)[:16])
        STATE.pack_into(self.buf, layout.STATE_AT, head, tail, crc)

    def clear(self) -> None:
        """Forget every session: an empty index and an empty log."""
        index_at = layout.HEADER_SIZE
        self.buf[index_at : index_at + self.buckets * WAYS * ENTRY.size] = bytes(
            self.buckets * WAYS * ENTRY.size
        )
        self._set_state(0, 0)

    def _count(self, field: int, by: int = 1) -> None:
        values = list(STATS.unpack_from(self.buf, layout.STATS_AT))
        values[field] += by
        STATS.pack_into(self.buf, layout.STATS_AT, *values)

    def used_bytes(self) -> int:
        """Bytes of the log between its tail and head (records, padding, dead space)."""
        head, tail = self._state()
        return min(head - tail, self.capacity)

    def stats(self) -> Stats:
        stores, hits, misses, evictions, removes, _ = STATS.unpack_from(self.buf, layout.STATS_AT)
        return Stats(stores, hits, misses, evictions, removes)

    # -- records -------------------------------------------------------------------------

    def _read(self, pos: int, head: int, *, check: bool = True) -> _Record | None:
        """The intact record at log position ``pos``, or None."""
        if pos < head - self.capacity or pos >= head:
            return None  # overwritten since (or never written in this life of the ring)
        off = pos % self.capacity
        if off + RECORD.size > self.capacity:
            return None
        at = self.data + off
        own, crc, expire, der_len, id_len = RECORD.unpack_from(self.buf, at)
        length = RECORD.size + id_len + der_len
        if own != pos or not 0 < id_len <= layout.MAX_ID or off + length > self.capacity:
            return None
        raw = self.buf[at : at + length]
        if check and crc != zlib.crc32(raw[layout.RECORD_CRC_AT + 4 :], zlib.crc32(raw[:8])):
            return None  # torn: its writer died half-way
        sid = bytes(raw[RECORD.size : RECORD.size + id_len])
        return _Record(sid, bytes(raw[RECORD.size + id_len :]), expire, layout.align(length))

    def _write(self, pos: int, sid: bytes, der: bytes, expire: int) -> None:
        raw = bytearray(RECORD.pack(pos, 0, expire, len(der), len(sid)) + sid + der)
        crc = zlib.crc32(raw[layout.RECORD_CRC_AT + 4 :], zlib.crc32(raw[:8]))
        raw[layout.RECORD_CRC_AT : layout.RECORD_CRC_AT + 4] = crc.to_bytes(4, "little")
        at = self.data + pos % self.capacity
        self.buf[at : at + len(raw)] = raw

    # -- index ---------------------------------------------------------------------------

    def _bucket(self, tag: int) -> int:
        return layout.HEADER_SIZE + (tag % self.buckets) * WAYS * ENTRY.size

    def _find(self, sid: bytes, head: int) -> tuple[int, _Record] | None:
        """The index entry's offset and the record for ``sid``, if both are intact."""
        tag = zlib.crc32(sid)
        bucket = self._bucket(tag)
        for way in range(WAYS):
            at = bucket + way * ENTRY.size
            pos1, entry_tag, _ = ENTRY.unpack_from(self.buf, at)
            if pos1 and entry_tag == tag:
                record = self._read(pos1 - 1, head)
                if record is not None and record.sid == sid:
                    return at, record
        return None

    def _clear_entry(self, at: int) -> None:
        ENTRY.pack_into(self.buf, at, 0, 0, 0)

    def _index(self, sid: bytes, pos: int, expire: int, head: int, now: int) -> int:
        """Point ``sid`` at ``pos``; returns 1 if an unexpired session lost its entry."""
        tag = zlib.crc32(sid)
        bucket = self._bucket(tag)
        victim, victim_pos, evicted = bucket, -1, 0
        for way in range(WAYS):
            at = bucket + way * ENTRY.size
            pos1, _, entry_expire = ENTRY.unpack_from(self.buf, at)
            if not pos1 or pos1 - 1 < head - self.capacity or entry_expire <= now:
                victim, evicted = at, 0  # empty, overwritten or expired: free to take
                break
            if victim_pos < 0 or pos1 - 1 < victim_pos:
                victim, victim_pos, evicted = at, pos1 - 1, 1  # the oldest, if it comes to it
        ENTRY.pack_into(self.buf, victim, pos + 1, tag, expire)
        return evicted

    # -- operations ----------------------------------------------------------------------

    def lookup(self, sid: bytes, now: int) -> bytes | None:
        """The DER of ``sid`` if it is stored, intact and not expired."""
        head, _ = self._state()
        found = self._find(sid, head)
        if found is None or found[1].expire <= now:
            if found is not None:
                self._clear_entry(found[0])
            self._count(2)
            return None
        self._count(1)
        return found[1].der

    def remove(self, sid: bytes) -> bool:
        """Forget ``sid`` (OpenSSL's remove callback: a bad or expired session)."""
        head, _ = self._state()
        found = self._find(sid, head)
        if found is None:
            return False
        self._clear_entry(found[0])
        self._count(4)
        return True

    def store(self, sid: bytes, der: bytes, expire: int, now: int) -> Stored:
        """Append a session; the oldest records make room. Too large: not stored."""
        length = layout.align(RECORD.size + len(sid) + len(der))
        if not 0 < len(sid) <= layout.MAX_ID or len(der) > layout.MAX_DER:
            return Stored(False, 0)
        if length > self.capacity:
            return Stored(False, 0)
        head, tail = self._state()
        previous = self._find(sid, head)
        if previous is not None:
            self._clear_entry(previous[0])  # a session stored again replaces the old copy
        off = head % self.capacity
        if off + length > self.capacity:
            head += self.capacity - off  # never split a record: skip to the ring's start
        end = head + length
        tail, evicted = self._advance_tail(tail, end - self.capacity, head, now)
        # Head first: from here on, records the new one overwrites are out of range even if
        # this process dies half-way through the copy below.
        self._set_state(end, tail)
        self._write(head, sid, der, expire)
        evicted += self._index(sid, head, expire, end, now)
        self._count(0)
        if evicted:
            self._count(3, evicted)
        return Stored(True, evicted)

    def _advance_tail(self, tail: int, limit: int, head: int, now: int) -> tuple[int, int]:
        """Walk the records about to be overwritten; count the unexpired, indexed ones."""
        evicted = 0
        tail = max(tail, head - self.capacity)
        while tail < limit:
            record = self._read(tail, head, check=False)
            if record is None:  # padding at the end of a lap, or a torn record
                tail = (tail // self.capacity + 1) * self.capacity
                continue
            if record.expire > now:
                found = self._find(record.sid, head)
                if found is not None and found[1] == record:
                    evicted += 1
            tail += record.size
        return tail, evicted


def initialise(buf: Buffer, data_offset: int, capacity: int, buckets: int) -> SessionRing:
    """An empty ring over ``buf`` (header fields are :mod:`~mailgate.shm.zones`' business)."""
    ring = SessionRing(buf, data_offset, capacity, buckets)
    ring.clear()
    STATS.pack_into(buf, layout.STATS_AT, 0, 0, 0, 0, 0, 0)
    return ring
