"""The per-session access log: one line per client session, written when it ends.

The session fills a :class:`SessionRecord` as it goes (TLS, login, upstream) and hands it to
:meth:`AccessLogs.write` at close. The formats are documented in
:mod:`mailgate.config.observability`. A record never holds a password: the login is the user
name only, and nothing else the client typed is kept.

Each worker opens its files itself with ``O_APPEND`` (one ``write()`` per line, so workers
never interleave inside a line) and reopens them on USR1.
"""

from __future__ import annotations

import datetime
import enum
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from mailgate.config import model

NONE = "-"


class Resumed(enum.Enum):
    """How the TLS session was set up: a full handshake, or which resumption."""

    NO = "no"
    SESSION_ID = "session_id"
    TICKET = "ticket"


class CloseReason(enum.Enum):
    """Why a session ended (the ``reason`` field and ``mailgate_sessions_total{reason}``)."""

    PROXIED = "proxied"  # logged in, relayed, one side finished normally
    QUIT = "quit"  # the protocol machine closed: QUIT/LOGOUT, too many errors, bad command
    CLIENT_CLOSED = "client_closed"  # EOF or reset before the relay
    TIMEOUT = "timeout"  # ``timeout`` or ``proxy_timeout``
    TLS_FAILED = "tls_failed"  # the handshake failed or was abandoned
    CERT_REJECTED = "cert_rejected"  # ``ssl_verify_client`` refused the certificate
    PROXY_PROTOCOL = "proxy_protocol"  # a broken PROXY header
    AUTH_FAILED = "auth_failed"  # the login was refused and the session closed
    AUTH_ERROR = "auth_error"  # the auth server could not be asked or answered nonsense
    BACKEND_FAILED = "backend_failed"  # the backend refused the login
    BACKEND_ERROR = "backend_error"  # the backend could not be reached or misbehaved
    RELAY_ERROR = "relay_error"  # a socket error while relaying
    INTERNAL_ERROR = "internal_error"  # mailgate could not go on (no password, bad bytes)
    SHUTDOWN = "shutdown"  # closed from outside: worker shutdown


@dataclass(slots=True)
class SessionRecord:
    """What the access log says about one session; filled in as the session goes."""

    start: float  # time.time() at accept
    client_addr: str
    client_port: int
    server: str  # the listen address, as nginx prints it
    protocol: str
    tls_version: str | None = None
    cipher: str | None = None
    sni: str | None = None
    resumed: Resumed | None = None  # None: no TLS
    handshake: float | None = None  # seconds
    login: bytes | None = None  # the user name only
    auth: str | None = None  # "ok", "failed", "error": the last login attempt's outcome
    upstream: str | None = None
    bytes_in: int = 0  # from the client
    bytes_out: int = 0  # to the client
    duration: float = 0.0
    reason: CloseReason = CloseReason.SHUTDOWN


def escape(value: bytes | str) -> str:
    """Printable ASCII as is; space, ``"``, ``\\`` and every other byte as ``\\xHH``.

    Client-chosen text (a login, an SNI name) can never break a line or forge a field.
    """
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in (0x22, 0x5C) else f"\\x{b:02x}" for b in raw
    )


def _stamp(when: float) -> str:
    return datetime.datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def _seconds(value: float | None) -> str:
    return NONE if value is None else f"{value:.3f}"


def _word(value: str | None) -> str:
    return NONE if value is None else escape(value)


def format_main(rec: SessionRecord) -> str:
    """The readable one-line default (``main``); absent values are ``-``."""
    login = NONE if rec.login is None else f'"{escape(rec.login)}"'
    resumed = NONE if rec.resumed is None else rec.resumed.value
    return (
        f"{_stamp(rec.start)} client={escape(rec.client_addr)}:{rec.client_port}"
        f" server={rec.server} protocol={rec.protocol}"
        f" tls={_word(rec.tls_version)} cipher={_word(rec.cipher)} sni={_word(rec.sni)}"
        f" resumed={resumed} handshake={_seconds(rec.handshake)}"
        f" login={login} auth={_word(rec.auth)} upstream={_word(rec.upstream)}"
        f" bytes_in={rec.bytes_in} bytes_out={rec.bytes_out}"
        f" duration={rec.duration:.3f} reason={rec.reason.value}\n"
    )


def format_json(rec: SessionRecord) -> str:
    """One JSON object per line; ``null`` for an absent value."""
    login = None if rec.login is None else rec.login.decode("utf-8", "backslashreplace")
    fields = {
        "time": _stamp(rec.start),
        "client_addr": rec.client_addr,
        "client_port": rec.client_port,
        "server": rec.server,
        "protocol": rec.protocol,
        "tls_version": rec.tls_version,
        "cipher": rec.cipher,
        "sni": rec.sni,
        "resumed": None if rec.resumed is None else rec.resumed.value,
        "handshake_time": None if rec.handshake is None else round(rec.handshake, 6),
        "login": login,
        "auth": rec.auth,
        "upstream": rec.upstream,
        "bytes_in": rec.bytes_in,
        "bytes_out": rec.bytes_out,
        "duration": round(rec.duration, 6),
        "reason": rec.reason.value,
    }
    # ensure_ascii: any byte the client chose ends up as an escape, never a raw newline.
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")) + "\n"


FORMATS: dict[model.AccessLogFormat, Callable[[SessionRecord], str]] = {
    model.AccessLogFormat.MAIN: format_main,
    model.AccessLogFormat.JSON: format_json,
}


class ErrorSink(Protocol):
    """Where a log file that cannot be opened or written is reported (the error log)."""

    def error(self, message: str) -> None: ...


class LogFile:
    """One access log file of this worker, opened on first use and on every reopen."""

    def __init__(self, path: str, errors: ErrorSink) -> None:
        self.path = path
        self.errors = errors
        self.fd = -1
        self._failed = False  # report a failing file once per (re)open, not per session

    def open(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            self._report(f'open() "{self.path}" failed ({err.errno}: {err.strerror})')
            return
        self.close()
        self.fd = fd
        self._failed = False

    def write(self, line: str) -> None:
        if self.fd < 0:
            self.open()
            if self.fd < 0:
                return
        try:
            os.write(self.fd, line.encode("utf-8", "replace"))
        except OSError as err:
            self._report(f'write() to "{self.path}" failed ({err.errno}: {err.strerror})')

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _report(self, message: str) -> None:
        if not self._failed:
            self._failed = True
            self.errors.error(message)


class AccessLogs:
    """Every ``access_log`` of a configuration: one file object per path, shared by servers."""

    def __init__(self, servers: Iterable[model.ServerConfig], errors: ErrorSink) -> None:
        self._files: dict[str, LogFile] = {}
        # Per server object: the (file, formatter) pairs its sessions write to.
        self._targets: dict[int, tuple[tuple[LogFile, Callable[[SessionRecord], str]], ...]] = {}
        for server in servers:
            targets = []
            for log in server.access_log:
                file = self._files.setdefault(log.path, LogFile(log.path, errors))
                targets.append((file, FORMATS[log.format]))
            self._targets[id(server)] = tuple(targets)

    def enabled(self, server: model.ServerConfig) -> bool:
        return bool(self._targets.get(id(server)))

    def write(self, server: model.ServerConfig, record: SessionRecord) -> None:
        for file, fmt in self._targets.get(id(server), ()):
            file.write(fmt(record))

    def reopen(self) -> None:
        """USR1: let go of rotated files (a file not used yet is opened on first write)."""
        for file in self._files.values():
            if file.fd >= 0:
                file.open()

    def open_all(self) -> None:
        """Open every file now (in the worker before it drops privileges, like nginx)."""
        for file in self._files.values():
            file.open()

    def close(self) -> None:
        for file in self._files.values():
            file.close()
