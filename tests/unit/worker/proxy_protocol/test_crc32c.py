"""CRC-32C for PROXY v2 headers."""

from __future__ import annotations

import pytest

from mailgate.worker.proxy_protocol.crc32c import crc32c


@pytest.mark.parametrize(
    ("data", "crc"),
    [(b"", 0), (b"123456789", 0xE3069283), (bytes(32), 0x8A9136AA), (b"\xff" * 32, 0x62A8AB43)],
)
def test_crc32c_known_vectors(data: bytes, crc: int) -> None:
    assert crc32c(data) == crc
