"""xtext (RFC 3461 section 4), the encoding of XCLIENT attribute values such as ``LOGIN=``.

xtext   = *( xchar / hexchar )
xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive, except "+" and "="
hexchar = "+" 2(%x30-39 / %x41-46)   ; uppercase hex of the octet
"""

from __future__ import annotations

_KEPT = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}
_ENCODED = tuple(bytes([octet]) if octet in _KEPT else b"+%02X" % octet for octet in range(256))


def xtext_encode(value: bytes) -> bytes:
    """``value`` as xtext: safe inside an SMTP command whatever bytes the login holds."""
    return b"".join(_ENCODED[octet] for octet in value)


def xtext_decode(value: bytes) -> bytes:
    """The inverse of :func:`xtext_encode` (for tests and for reading XCLIENT replies)."""
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == ord("+"):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return bytes(out)
