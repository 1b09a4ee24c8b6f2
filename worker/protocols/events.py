"""What the protocol machines hand to the worker: events, wait sentinels and the API error.

A machine is driven h11-style: ``receive_data()`` buffers bytes, ``next_event()`` returns one
event, or ``NEED_DATA`` (read more, at most ``read_size()`` bytes) or ``PAUSED`` (the machine
waits for the caller: the greeting, a TLS handshake or an auth_http answer).
"""

from __future__ import annotations

from dataclasses import dataclass

# The sentinels are the ones every sans-IO machine of the worker uses; re-exported here so
# that the protocol API reads as one module.
from mailgate.worker.sansio import NEED_DATA, PAUSED, Wait

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "Close",
    "Credentials",
    "Event",
    "LocalProtocolError",
    "Login",
    "Send",
    "StartTLS",
    "Wait",
]


class LocalProtocolError(Exception):
    """The caller misused a machine (h11's name): a bug in mailgate, never the client's doing."""


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to write to the client, exactly as nginx would."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Start the TLS handshake now; the reply was the previous ``Send``.

    Every byte the client sent after the STARTTLS command is already discarded (the
    CVE-2011-0411 / CVE-2014-3556 class), and ``receive_data`` refuses plaintext until
    ``tls_started()``.
    """


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection (after writing any ``Send`` that came before)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Everything the auth_http request and the backend login need, as raw client bytes.

    Nothing is escaped here: user names and passwords may hold CR, LF, NUL or spaces, and
    escaping them is the auth_http module's job.
    """

    method: str  # "plain" | "apop" | "cram-md5" | "external" | "none" (Auth-Method)
    user: bytes
    password: bytes  # the APOP/CRAM-MD5 digest for those methods, empty for external/none
    attempt: int  # Auth-Login-Attempt, 1 for the first login of the session
    salt: bytes | None = None  # "<rand.time@server_name>", only for apop and cram-md5
    tag: bytes = b""  # IMAP: the login command's tag as nginx keeps it, with its space: b"a1 "
    helo: bytes = b""  # SMTP: the HELO/EHLO argument (b"" if none was sent)
    esmtp: bool = False  # SMTP: the client said EHLO, so the backend gets EHLO too
    mail_from: bytes = b""  # SMTP none: the whole "MAIL FROM:<...> ..." command, no CRLF
    rcpt_to: bytes = b""  # SMTP none: the whole first "RCPT TO:<...> ..." command, no CRLF


@dataclass(frozen=True, slots=True)
class Login:
    """The client gave credentials: ask auth_http, then call ``login_failed`` or
    ``take_pipelined``. The machine reads nothing meanwhile (``PAUSED``)."""

    credentials: Credentials


Event = Send | StartTLS | Login | Close
