"""Reading the auth_http answer as nginx does, and the client lines nginx builds from it (sans-IO).

nginx's reading (``ngx_mail_auth_http_ignore_status_line``, ``..._parse_header_line``,
``..._process_headers``), reproduced here:

* the whole answer up to the empty line must fit in 1024 bytes; the status line, if the answer
  starts with ``HTTP/``, is skipped whatever its code; the body is never read;
* header names are ``[A-Za-z0-9-]`` (first character alphanumeric), compared case-insensitively;
  values are trimmed of spaces (not tabs); a CR must be followed by LF; anything else is
  "sent invalid header in response";
* ``Auth-Status: OK`` / ``WAIT`` are case-sensitive; any other text is an error shown to the
  client; the last occurrence of each header wins.

Feed every chunk read from the auth server to :meth:`AuthResponseParser.feed` until it returns an
outcome; call :meth:`AuthResponseParser.eof` if the server closes first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mailgate.config.model import Protocol
from mailgate.worker.auth_http.request import AuthRequest
from mailgate.worker.sansio import NEED_DATA, NeedData, log_text

MAX_RESPONSE = 1024  # ngx_create_temp_buf(ctx->pool, 1024)
_NGX_MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Ok:
    """Log in to ``server:port`` as ``user`` / ``password`` (None: SMTP without a password)."""

    server: str
    port: int
    user: bytes
    password: bytes | None = field(repr=False)
    peer_name: str  # "addr:port" as the auth server wrote them, for "upstream:" in logs


@dataclass(frozen=True, slots=True)
class AuthWait:
    """``Auth-Status: WAIT``: ask the auth server again after ``seconds`` (0: at once), with
    the same Auth-Login-Attempt."""

    seconds: int


@dataclass(frozen=True, slots=True)
class Fail:
    """Login refused: ``message`` is the Auth-Status text shown to the client."""

    message: bytes
    wait: int = 0  # Auth-Wait
    error_code: bytes | None = None  # Auth-Error-Code (SMTP)

    @property
    def log_message(self) -> str:
        """nginx's info-level line for a refused login."""
        return f'client login failed: "{log_text(self.message)}"'

    @property
    def closes_session(self) -> bool:
        """Without Auth-Wait nginx sends the line and closes. With it, nginx waits ``wait``
        seconds *before* sending the line, then puts the session back in its auth state (auth
        method reset to plain, ``timeout`` re-armed) so the client may try again."""
        return self.wait == 0


@dataclass(frozen=True, slots=True)
class Invalid:
    """The answer is unusable: log ``log_message`` at error level (None: nginx logs nothing),
    send the protocol's internal-error line, close."""

    log_message: str | None


AuthResult = Ok | AuthWait | Fail | Invalid


def _atoi(text: bytes) -> int | None:
    """``ngx_atoi``: one or more ASCII digits, no sign, no overflow."""
    value = int(text) if text.isdigit() else None
    return value if value is not None and value <= _NGX_MAX_INT else None


def _ipv4(text: str) -> str | None:
    """``ngx_inet_addr``: four dot-separated decimal octets (leading zeros allowed)."""
    octets = text.split(".")
    if len(octets) != 4 or not all(o.isdigit() and o.isascii() for o in octets):
        return None
    values = [int(o) for o in octets]
    return ".".join(map(str, values)) if max(values) <= 255 else None


def _ip_literal(text: bytes) -> str | None:
    """Auth-Server as ``ngx_parse_addr`` accepts it: IPv4 or a bare IPv6, never a name."""
    address = text.decode("ascii", "replace")
    if "." in address and ":" not in address:
        return _ipv4(address)
    try:
        return str(ipaddress.IPv6Address(address)) if "%" not in address else None
    except ValueError:
        return None


@dataclass(slots=True)
class _Answer:
    """The headers that matter, as they accumulate (nginx's ``ctx`` and ``s->login``...)."""

    user: bytes
    password: bytes | None
    error: bytes | None = None
    wait_requested: bool = False
    server: bytes = b""
    port: bytes = b""
    sleep: int = 0
    error_code: bytes | None = None

    def status(self, value: bytes) -> None:
        if value == b"WAIT":
            self.wait_requested = True
        elif value != b"OK":  # OK leaves an earlier error standing, as in nginx
            self.error = value

    def set_server(self, value: bytes) -> None:
        self.server = value

    def set_port(self, value: bytes) -> None:
        self.port = value

    def set_user(self, value: bytes) -> None:
        self.user = value

    def set_password(self, value: bytes) -> None:
        self.password = value

    def set_wait(self, value: bytes) -> None:
        seconds = _atoi(value)
        if seconds is not None:  # a non-numeric Auth-Wait is ignored
            self.sleep = seconds

    def set_error_code(self, value: bytes) -> None:
        self.error_code = value or None


_HEADERS: Mapping[bytes, Callable[[_Answer, bytes], None]] = {
    b"auth-status": _Answer.status,
    b"auth-server": _Answer.set_server,
    b"auth-port": _Answer.set_port,
    b"auth-user": _Answer.set_user,
    b"auth-pass": _Answer.set_password,
    b"auth-wait": _Answer.set_wait,
    b"auth-error-code": _Answer.set_error_code,
}

# A complete header line without its LF (and CR). The name may stand alone: nginx takes
# "Name\r\n" as a header with an empty value.
_HEADER = re.compile(rb"([A-Za-z0-9][A-Za-z0-9-]*)(?::(.*))?", re.DOTALL)
# What an unfinished line may look like so far without being already wrong.
_PARTIAL_NAME = re.compile(rb"(?:[A-Za-z0-9][A-Za-z0-9-]*)?\r?")
_STATUS_PREFIX = b"HTTP/"
_LINE_END = re.compile(rb"[\r\n]")


class AuthResponseParser:
    """One auth_http answer, fed as it arrives; never holds more than 1024 bytes."""

    def __init__(self, request: AuthRequest, peer_name: str) -> None:
        self._protocol = request.protocol
        self._peer = peer_name
        # nginx has no password after a salted method (it clears it) or after EXTERNAL (none
        # was given): only Auth-Pass can provide one then.
        no_password = request.sends_salt or request.method == "external"
        kept_password = None if no_password else request.password
        self._answer = _Answer(user=request.user, password=kept_password)
        self._buffer = bytearray()
        self._pos = -1  # start of the first unparsed header line; -1 while in the status line
        self._result: AuthResult | None = None

    @property
    def buffered(self) -> int:
        """Bytes held (at most ``MAX_RESPONSE``)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> AuthResult | NeedData:
        """Take the next bytes read from the auth server; an outcome once one is known."""
        if self._result is not None:
            return self._result
        self._buffer += data[: MAX_RESPONSE - len(self._buffer)]
        result = self._parse()
        if result is NEED_DATA and len(self._buffer) >= MAX_RESPONSE:
            # nginx's next recv() into the full buffer returns 0: internal error, no log line
            result = Invalid(None)
        if result is not NEED_DATA:
            self._result = result
        return result

    def eof(self) -> AuthResult:
        """The auth server closed the connection: nginx answers an internal error silently."""
        if self._result is None:
            self._result = Invalid(None)
        return self._result

    def _invalid_header(self) -> Invalid:
        return Invalid(f"auth http server {self._peer} sent invalid header in response")

    def _parse(self) -> AuthResult | NeedData:
        if self._pos < 0:
            start = self._skip_status_line()
            if not isinstance(start, int):
                return start
            self._pos = start
        while True:
            end = self._buffer.find(b"\n", self._pos)
            if end < 0:
                partial = bytes(self._buffer[self._pos :])
                return NEED_DATA if _partial_line_ok(partial) else self._invalid_header()
            line = bytes(self._buffer[self._pos : end]).removesuffix(b"\r")
            self._pos = end + 1
            if not line:
                return self._outcome()
            header = _HEADER.fullmatch(line) if b"\r" not in line else None
            if header is None:
                return self._invalid_header()
            handler = _HEADERS.get(header[1].lower())
            if handler is not None:  # unknown headers are ignored
                handler(self._answer, (header[2] or b"").strip(b" "))

    def _skip_status_line(self) -> int | Invalid | NeedData:
        """Where the headers start: after an ``HTTP/...`` line, else at the first byte."""
        head = bytes(self._buffer[: len(_STATUS_PREFIX)])
        if not _STATUS_PREFIX.startswith(head):
            return 0
        if len(head) < len(_STATUS_PREFIX):
            return NEED_DATA
        match = _LINE_END.search(self._buffer, len(_STATUS_PREFIX))
        if match is None or (match[0] == b"\r" and match.end() == len(self._buffer)):
            return NEED_DATA
        if match[0] == b"\n":
            return match.end()
        if self._buffer[match.end()] == ord("\n"):
            return match.end() + 1
        return Invalid(f"auth http server {self._peer} sent invalid response")

    def _outcome(self) -> AuthResult:
        answer, peer = self._answer, self._peer
        # An empty Auth-Status is no error for SMTP: nginx keeps the bare text there, and an
        # empty text means "no error" (IMAP and POP3 wrap it in "NO "/"-ERR ", never empty).
        if answer.error is not None and (answer.error or self._protocol is not Protocol.SMTP):
            if answer.wait_requested and answer.sleep:
                return AuthWait(answer.sleep)  # the sleep handler sees auth_wait and asks again
            return Fail(answer.error, answer.sleep, answer.error_code)
        if answer.wait_requested:
            return AuthWait(answer.sleep)
        if not answer.server or not answer.port:
            return Invalid(f"auth http server {peer} did not send server or port")
        if answer.password is None and self._protocol is not Protocol.SMTP:
            return Invalid(f"auth http server {peer} did not send password")
        server = _ip_literal(answer.server)
        if server is None:
            server_text = log_text(answer.server)
            return Invalid(f'auth http server {peer} sent invalid server address:"{server_text}"')
        port = _atoi(answer.port)
        if port is None or not 1 <= port <= 65535:
            port_text = log_text(answer.port)
            return Invalid(f'auth http server {peer} sent invalid server port:"{port_text}"')
        name = f"{log_text(answer.server)}:{log_text(answer.port)}"
        return Ok(server, port, answer.user, answer.password, name)


def _partial_line_ok(partial: bytes) -> bool:
    """Whether a header line still waiting for its LF can become valid (nginx rejects a bad
    byte as soon as it arrives, before the line ends)."""
    cr = partial.find(b"\r")
    if 0 <= cr < len(partial) - 1:
        return False  # a CR must be followed by LF
    name, colon, _ = partial.partition(b":")
    return bool(_PARTIAL_NAME.fullmatch(name)) and (not colon or bool(name))
