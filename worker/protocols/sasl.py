"""SASL decoding as nginx does it (``ngx_mail_auth_parse`` and ``ngx_mail_auth_*`` in
``ngx_mail_parse.c`` / ``ngx_mail_handler.c``).

Every decoder returns ``None`` where nginx answers "invalid command". There is no special
``*`` cancel in nginx: ``*`` is not base64, so it is an invalid command like any other.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Sequence

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
CRAM_MD5_DIGEST_LEN = 32


class Mechanism(enum.Enum):
    """What ``AUTH``/``AUTHENTICATE <mech> [initial-response]`` asked for."""

    LOGIN = "login"  # prompt for the user name
    LOGIN_USERNAME = "login+ir"  # user name given, prompt for the password
    PLAIN = "plain"  # prompt for the PLAIN response
    PLAIN_IR = "plain+ir"  # PLAIN response given
    CRAM_MD5 = "cram-md5"
    EXTERNAL = "external"
    EXTERNAL_IR = "external+ir"


class Step(enum.Enum):
    """Which SASL response a machine waits for (nginx's ``*_auth_*`` mail states)."""

    USERNAME = "login username"
    PASSWORD = "login password"
    PLAIN = "plain"
    CRAM_MD5 = "cram-md5"
    EXTERNAL = "external"


# (mechanism name, argument count) -> Mechanism; anything else is an invalid command.
_MECHANISMS = {
    (b"LOGIN", 1): Mechanism.LOGIN,
    (b"LOGIN", 2): Mechanism.LOGIN_USERNAME,
    (b"PLAIN", 1): Mechanism.PLAIN,
    (b"PLAIN", 2): Mechanism.PLAIN_IR,
    (b"CRAM-MD5", 1): Mechanism.CRAM_MD5,
    (b"EXTERNAL", 1): Mechanism.EXTERNAL,
    (b"EXTERNAL", 2): Mechanism.EXTERNAL_IR,
}


def parse_mechanism(args: Sequence[bytes]) -> Mechanism | None:
    """The mechanism named by the command's arguments (case-insensitive)."""
    if not args:
        return None
    return _MECHANISMS.get((args[0].upper(), len(args)))


def decode_base64(text: bytes) -> bytes | None:
    """``ngx_decode_base64``: stop at the first ``=`` (what follows is never looked at),
    padding optional, a length of 4n+1 refused."""
    end = text.find(b"=")
    body = text if end < 0 else text[:end]
    if len(body) % 4 == 1 or body.translate(None, _ALPHABET):
        return None
    try:
        return binascii.a2b_base64(body + b"=" * (-len(body) % 4))
    except binascii.Error:  # pragma: no cover - excluded by the checks above
        return None


def encode_base64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain(response: bytes) -> tuple[bytes, bytes] | None:
    """``[authzid] NUL user NUL password``: the authzid is dropped, the password keeps any
    further NUL bytes (nginx takes everything after the second NUL)."""
    decoded = decode_base64(response)
    if decoded is None:
        return None
    first = decoded.find(b"\0")
    if first < 0 or first + 1 == len(decoded):
        return None
    second = decoded.find(b"\0", first + 1)
    if second < 0:
        return None
    return decoded[first + 1 : second], decoded[second + 1 :]


def cram_md5(response: bytes) -> tuple[bytes, bytes] | None:
    """``user SP digest`` with a 32-character digest."""
    decoded = decode_base64(response)
    if decoded is None:
        return None
    user, space, digest = decoded.partition(b" ")
    if not space or len(digest) != CRAM_MD5_DIGEST_LEN:
        return None
    return user, digest


def cram_md5_challenge(prefix: bytes, salt: bytes) -> bytes:
    """``ngx_mail_auth_cram_md5_salt``: the prefix, the base64 salt, CRLF."""
    return prefix + encode_base64(salt) + b"\r\n"
