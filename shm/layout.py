"""Byte layout of one ``ssl_session_cache shared:NAME:SIZE`` segment.

Every integer is little-endian. The segment is one POSIX shared-memory object (``segment.py``),
guarded by a record lock on the segment itself (``lock.py``). Every read or write below,
except the header's fixed part once it is valid, happens under that lock.

Header (``HEADER_SIZE`` bytes)::

    offset size  field
         0    8  magic  b"MGSSLZ\\x00\\x01"
         8    4  layout version (``VERSION``)
        12    4  crc32 of bytes 0..64 with this field zeroed: a torn or foreign header is
                 re-initialised (and logged), never trusted
        16    8  segment size in bytes
        24    4  zero (version 1 kept a SysV semaphore key here; nothing reads it)
        28    4  generation: bumped at every (re)initialisation
        32    4  owner: pid of the master that attached last (the one that made it, or the
                 new master after an upgrade)
        36    4  data offset (start of the ring)
        40    4  data capacity (bytes of ring)
        44    4  index buckets
        48   16  attached masters: 4 pids (0 = free); the last one to leave unlinks
        64    8  head: log position where the next record goes (grows forever)
        72    8  tail: log position of the oldest record not yet walked over
        80    4  crc32 of bytes 64..80: a torn head/tail resets the ring
        96    8  stores        104  8  hits        112  8  misses
       120    8  evictions (unexpired sessions dropped to make room)
       128    8  removes       136  8  last "could not allocate" warning, unix seconds
       256  288  ticket keys: 3 x 96 bytes, [0] current, [1] previous, [2] next
                 (name[16] | hmac[32] | aes[32] | expire i64 | size u32 | pad[4])
       544    4  crc32 of the ticket keys: torn keys are regenerated
      1024       index: ``buckets`` x ``WAYS`` entries of 16 bytes
                 (log position + 1, 0 = empty: u64 | crc32 of the ID: u32 | expire: u32)
       ...       ring: ``data capacity`` bytes of records, each aligned to ``ALIGN``

A record (the session ID and DER of one ``SSL_SESSION``)::

         0    8  its own log position (a stale index entry never matches a newer record)
         8    4  crc32 of bytes 0..8 and 12..end: a record half-written by a killed worker
                 fails it and is never served
        12    4  expire, unix seconds
        16    2  DER length
        18    1  ID length (1..32)
        19    1  zero
        20       ID, then DER

The ring is a log: records are appended at ``head``; one that would cross the end of the ring
starts again at offset 0 (the rest is padding). A record at log position ``p`` is intact only
while ``p >= head - capacity``; older ones have been (or may be being) overwritten. So "full"
simply means the oldest records go, which is what nginx does when its slab is exhausted.
"""

from __future__ import annotations

import struct

MAGIC = b"MGSSLZ\x00\x01"
VERSION = 2  # 2: the lock is a record lock on the segment, no semaphore key
HEADER_SIZE = 1024
WAYS = 8  # index entries per bucket: one 128-byte bucket is scanned per lookup
ALIGN = 8
MAX_ID = 32  # SSL_MAX_SSL_SESSION_ID_LENGTH; nginx does not cache longer IDs either
MAX_DER = 8192  # nginx 1.27.5: larger sessions are not cached
# Sizing: a TLS 1.2 session is ~121 bytes of DER plus its SNI, TLS 1.3 ~157; with the 20-byte
# record header and a 32-byte ID that is ~190 bytes, plus two index entries per record.
TYPICAL_RECORD = 192
ENTRIES_PER_RECORD = 2

FIXED = struct.Struct("<8sIIQiIiIII4i")  # bytes 0..64
FIXED_CRC_AT = 12
STATE = struct.Struct("<QQI")  # head, tail, crc at 64
STATE_AT = 64
STATS = struct.Struct("<QQQQQq")  # stores hits misses evictions removes warn_time
STATS_AT = 96
KEY = struct.Struct("<16s32s32sqI4x")
KEYS_AT = 256
KEY_COUNT = 3
KEYS_CRC_AT = KEYS_AT + KEY_COUNT * KEY.size
ENTRY = struct.Struct("<QII")
U32 = struct.Struct("<I")
RECORD = struct.Struct("<QIIHBx")
RECORD_CRC_AT = 8
MASTER_SLOTS = 4

assert FIXED.size == 64 and STATE.size == 20 and KEY.size == 96 and RECORD.size == 20
assert KEYS_CRC_AT + 4 <= HEADER_SIZE


def align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def plan(size: int) -> tuple[int, int, int]:
    """``(data offset, data capacity, buckets)`` for a segment of ``size`` bytes."""
    avail = size - HEADER_SIZE
    records = max(1, avail // (TYPICAL_RECORD + ENTRIES_PER_RECORD * ENTRY.size))
    buckets = max(1, -(-records * ENTRIES_PER_RECORD // WAYS))
    data_offset = align(HEADER_SIZE + buckets * WAYS * ENTRY.size)
    return data_offset, size - data_offset, buckets
