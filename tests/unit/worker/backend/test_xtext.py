"""xtext for XCLIENT values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate.worker.backend.xtext import xtext_decode, xtext_encode


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"joe@example.org", b"joe@example.org"),
        (b"a+b", b"a+2Bb"),
        (b"a=b", b"a+3Db"),
        (b"a b", b"a+20b"),
        (b"\r\n", b"+0D+0A"),
        (b"\x7f\xc3\xa9", b"+7F+C3+A9"),
        (b"!~", b"!~"),
    ],
)
def test_xtext_encoding(raw: bytes, encoded: bytes) -> None:
    assert xtext_encode(raw) == encoded


@given(st.binary())
def test_xtext_round_trip_and_only_safe_bytes(raw: bytes) -> None:
    encoded = xtext_encode(raw)
    assert xtext_decode(encoded) == raw
    assert all(0x21 <= octet <= 0x7E and octet != ord("=") for octet in encoded)
