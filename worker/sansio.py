"""What the sans-IO machines of the worker share: the ``NEED_DATA`` sentinel (as h11's).

A machine answers ``NEED_DATA`` when it cannot say anything before more bytes arrive; it is a
one-member enum so that ``result is NEED_DATA`` narrows the type for mypy.
"""

from __future__ import annotations

import enum


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


def log_text(raw: bytes) -> str:
    """Peer bytes as they may appear in a log line: undecodable bytes shown as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")
