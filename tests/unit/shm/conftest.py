"""Zones for the shm tests: each test gets its own instance name and releases it after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from mailgate.shm import layout
from mailgate.shm.session_ring import SessionRing, initialise
from mailgate.shm.zones import PendingLog, Registry


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry()
    reg.instance = f"t{os.getpid()}{uuid.uuid4().hex[:8]}"
    yield reg
    reg.release()


def ring(size: int = 1 << 20) -> SessionRing:
    """A ring over plain memory: the layout without a segment or a lock."""
    data_offset, capacity, buckets = layout.plan(size)
    return initialise(bytearray(size), data_offset, capacity, buckets)


def log_lines(reg: Registry) -> list[tuple[str, str]]:
    assert isinstance(reg.log, PendingLog)
    return reg.log.lines
