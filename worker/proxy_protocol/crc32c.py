"""CRC-32C (Castagnoli, RFC 3720), the checksum of the PROXY protocol v2 ``PP2_TYPE_CRC32C`` TLV.

A table-driven pure-Python version: the headers it covers are a few hundred bytes at most.
"""

from __future__ import annotations

_POLYNOMIAL = 0x82F63B78  # 0x1EDC6F41 bit-reversed


def _entry(index: int) -> int:
    crc = index
    for _ in range(8):
        crc = (crc >> 1) ^ _POLYNOMIAL if crc & 1 else crc >> 1
    return crc


_TABLE = tuple(_entry(index) for index in range(256))


def crc32c(data: bytes) -> int:
    """The CRC-32C of ``data`` (``crc32c(b"123456789") == 0xE3069283``)."""
    crc = 0xFFFFFFFF
    for octet in data:
        crc = _TABLE[(crc ^ octet) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
