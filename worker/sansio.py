"""What the sans-IO machines of the worker share: the one family of "nothing to hand out
now" sentinels (as h11's), and how peer bytes are shown in the error log.

Every machine -- the protocol machines, the auth_http response parser, the backend login, the
PROXY header codec -- answers ``NEED_DATA`` when it cannot say anything before more bytes
arrive. Only the protocol machines also answer ``PAUSED``: they wait for their caller (the
greeting, a TLS handshake, an auth_http answer). The sentinels are members of one enum so that
``result is NEED_DATA`` narrows the type for mypy; a machine that never pauses is typed with
``NeedData``, so that one test narrows its result to the events alone.
"""

from __future__ import annotations

import enum
import re
from typing import Final, Literal, TypeAlias


class Wait(enum.Enum):
    """Nothing to hand out now."""

    NEED_DATA = "need data"
    PAUSED = "paused"


NEED_DATA: Final = Wait.NEED_DATA
PAUSED: Final = Wait.PAUSED

# The result type of a machine that only ever waits for bytes.
NeedData: TypeAlias = Literal[Wait.NEED_DATA]


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
