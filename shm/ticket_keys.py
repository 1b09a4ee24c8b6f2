"""Session-ticket keys shared by the workers of a zone: nginx 1.23.2's rotation.

Three 80-byte keys (AES-256-CBC and a 32-byte HMAC key) live in the segment header:
``[0]`` current, ``[1]`` previous, ``[2]`` next. The current key's expiry is pushed to
``now + ssl_session_timeout`` whenever a worker syncs, since a ticket it is about to seal must
stay readable that long. When the previous key has expired, the keys rotate: previous <-
current <- next, and a fresh next is drawn. Every worker therefore seals with the same key
and opens tickets sealed under the previous one; the next key is known ahead of time, so a
worker whose copy is a second older than another's still opens that worker's new tickets.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mailgate.shm import layout
from mailgate.shm.layout import KEY, KEY_COUNT

KEY_SIZE = 80  # nginx's shared keys are always the 80-byte (AES-256) kind


@dataclass(frozen=True, slots=True)
class SharedKey:
    """One key as the ticket callback needs it."""

    name: bytes
    hmac_key: bytes = field(repr=False)
    aes_key: bytes = field(repr=False)
    expire: int = 0

    @classmethod
    def fresh(cls, random: Callable[[int], bytes], expire: int) -> SharedKey:
        data = random(KEY_SIZE)  # the key-file order: name | hmac | aes
        return cls(data[:16], data[16:48], data[48:80], expire)


EMPTY = SharedKey(bytes(16), bytes(32), bytes(32), 0)


def read(buf: Any) -> list[SharedKey] | None:
    """The three keys, or None when the block is torn or was never written."""
    raw = bytes(buf[layout.KEYS_AT : layout.KEYS_CRC_AT])
    (crc,) = layout.U32.unpack_from(buf, layout.KEYS_CRC_AT)
    if crc != zlib.crc32(raw) or not any(raw):
        return None
    keys = []
    for i in range(KEY_COUNT):
        name, hmac_key, aes_key, expire, size = KEY.unpack_from(raw, i * KEY.size)
        keys.append(SharedKey(name, hmac_key, aes_key, expire) if size else EMPTY)
    return keys


def write(buf: Any, keys: list[SharedKey]) -> None:
    raw = b"".join(
        KEY.pack(k.name, k.hmac_key, k.aes_key, k.expire, KEY_SIZE if k is not EMPTY else 0)
        for k in keys
    )
    buf[layout.KEYS_AT : layout.KEYS_CRC_AT] = raw
    layout.U32.pack_into(buf, layout.KEYS_CRC_AT, zlib.crc32(raw))


def rotate(
    buf: Any, now: int, timeout: int, random: Callable[[int], bytes] = os.urandom
) -> tuple[list[SharedKey], bool]:
    """Bring the keys up to date at ``now``; returns them and whether they were unreadable.

    Call under the zone lock. The steps are ``ngx_ssl_rotate_ticket_keys``'.
    """
    stored = read(buf)
    keys = list(stored) if stored is not None else [EMPTY] * KEY_COUNT
    torn = stored is None and any(bytes(buf[layout.KEYS_AT : layout.KEYS_CRC_AT + 4]))
    expire = now + timeout
    if keys[0].expire == 0:
        keys[0] = SharedKey.fresh(random, expire)
        keys[2] = keys[0]  # the rotation below makes it current and draws a new next
    if keys[1].expire < now:
        keys[1], keys[0] = keys[0], keys[2]
        keys[2] = SharedKey.fresh(random, 0)
    if expire > keys[0].expire:
        keys[0] = replace(keys[0], expire=expire)
    if keys != stored:
        write(buf, keys)
    return keys, torn
