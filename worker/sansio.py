"""What the sans-IO machines of the worker share: the ``NEED_DATA`` sentinel (as h11's), and
how peer bytes are shown in the error log.

A machine answers ``NEED_DATA`` when it cannot say anything before more bytes arrive; it is a
one-member enum so that ``result is NEED_DATA`` narrows the type for mypy.
"""

from __future__ import annotations

import enum
import re


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


# C0 controls, DEL, and the C1 controls (U+0080..U+009F) that some terminals also obey.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def _hex(match: re.Match[str]) -> str:
    return "".join(f"\\x{byte:02x}" for byte in match[0].encode("utf-8"))


def escape_controls(text: str) -> str:
    """``text`` with every control character as ``\\xHH`` (each byte of its UTF-8 form).

    What the error log and syslog sinks apply to every message, whoever built it: a login, a
    PROXY header or an auth server's text can then neither split a log line (CR, LF), forge
    the start of the next one, nor drive the terminal of an admin reading the log (ESC).
    Printable text, UTF-8 included, is kept as is.
    """
    return _CONTROLS.sub(_hex, text)


def log_text(raw: bytes) -> str:
    """Peer bytes as they may appear in a log line: undecodable bytes and control characters
    shown as ``\\xHH``, as the sinks would show them anyway (see ``escape_controls``)."""
    return escape_controls(raw.decode("utf-8", "backslashreplace"))
