"""A real auth_http server, written the way a mail admin writes their own.

nginx (and mailgate) ask it over HTTP/1.0 who a user is and where their mailbox lives
(nginx.org/en/docs/mail/ngx_mail_auth_http_module.html#protocol). It answers from a table of
accounts, and records every request's raw header lines in order, so tests can assert the
header order and escaping that the proxy put on the wire.

Tests steer single answers with `answer_next(...)` (WAIT, errors with Auth-Wait, garbage, an
oversized header block, a slow answer, a hang-up, Auth-Error-Code, Auth-User/Auth-Pass
overrides); every other request gets the table-driven answer. `reset()` restores the table and
forgets the recorded requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import os
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tests.servers.ports import LOOPBACK

Header = tuple[str, str]
FAILURE = "Invalid login or password"


@dataclass(frozen=True)
class Account:
    """One user: the plaintext password, and optionally a backend of their own."""

    password: str
    backend: tuple[str, int] | None = None  # None: the backend of the request's protocol
    accept_any_password: bool = False  # a sloppy auth server, for injection tests
    auth_user: str | None = None  # Auth-User override: the login used on the backend
    auth_pass: str | None = None  # Auth-Pass override: the password used on the backend


@dataclass(frozen=True)
class Answer:
    """One scripted answer: headers, raw bytes, or a hang-up, after an optional delay."""

    headers: tuple[Header, ...] = ()
    raw: bytes | None = None  # sent as is instead of a well-formed response
    raw_tail: bytes = b""  # then this, in a second write a moment later
    delay: float = 0.0
    hang_up: bool = False  # close without answering
    table: bool = False  # answer from the table, after `delay`

    @classmethod
    def status(cls, text: str, *extra: Header) -> Answer:
        """`Auth-Status: text` plus extra headers, e.g. an error text with Auth-Wait."""
        return cls(headers=(("Auth-Status", text), *extra))

    @classmethod
    def wait(cls, seconds: int = 0) -> Answer:
        """The undocumented `Auth-Status: WAIT`: ask again after `seconds`."""
        return cls.status("WAIT", ("Auth-Wait", str(seconds)))

    @classmethod
    def garbage(cls) -> Answer:
        return cls(raw=b"this is not HTTP\x00\x01 at all\r\n\r\n")

    @classmethod
    def oversized(cls, size: int = 4096) -> Answer:
        """A header block larger than the proxy's 1024-byte response buffer.

        Raw, in two writes: nginx reads with edge-triggered epoll, so a block that arrives all at
        once, larger than its buffer, leaves it waiting for an event that never comes.
        """
        head = b"HTTP/1.0 200 OK\r\nX-Padding: " + b"p" * size
        return cls(raw=head, raw_tail=b"\r\nAuth-Status: OK\r\n\r\n")

    @classmethod
    def slow(cls, seconds: float) -> Answer:
        return cls(delay=seconds, table=True)

    @classmethod
    def closed(cls) -> Answer:
        return cls(hang_up=True)


@dataclass(frozen=True)
class AuthRequest:
    """One request as received: the request line and the raw header lines, in order."""

    request_line: str
    lines: tuple[str, ...]  # "Name: value", without CRLF, exactly as sent

    @property
    def headers(self) -> list[Header]:
        split = (line.partition(":") for line in self.lines)
        return [(name, value.lstrip(" ")) for name, _, value in split]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.headers]

    def get(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), as sent (still escaped)."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(f"{name} not in {self.names}")
        return value


class _RecordingReader:
    """Wraps the request's rfile and keeps every line http.server reads from it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.lines: list[bytes] = []

    def readline(self, limit: int = -1) -> bytes:
        line = self._raw.readline(limit)
        self.lines.append(line)
        return line

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def close(self) -> None:
        self._raw.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server | _UnixServer
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.recorder = _RecordingReader(self.rfile)  # type: ignore[arg-type]
        self.rfile = self.recorder  # type: ignore[assignment]

    def do_GET(self) -> None:
        lines = [line.decode("latin-1").rstrip("\r\n") for line in self.recorder.lines]
        request = AuthRequest(lines[0], tuple(line for line in lines[1:] if line))
        answer = self.server.owner.record(request)
        time.sleep(answer.delay)
        if answer.hang_up:
            self.close_connection = True
            return
        if answer.raw is not None:
            self.wfile.write(answer.raw)
            if answer.raw_tail:
                time.sleep(0.1)
                self.wfile.write(answer.raw_tail)
            return
        headers = answer.headers if not answer.table else self.server.owner.lookup(request)
        self.send_response_only(200)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the recorded requests are the log."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: AuthServer) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.owner = owner


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The same handler on a unix socket (``auth_http unix:/path:/uri``)."""

    daemon_threads = True

    def __init__(self, owner: AuthServer, path: Path) -> None:
        super().__init__(str(path), _Handler)
        self.owner = owner


@dataclass
class AuthServer:
    """The auth server's table and recorder; `url` goes into `auth_http`."""

    backends: Mapping[str, tuple[str, int]]  # Auth-Protocol -> default backend
    accounts: dict[str, Account] = field(default_factory=dict)
    requests: list[AuthRequest] = field(default_factory=list)
    port: int = 0
    _initial: dict[str, Account] = field(default_factory=dict)
    _script: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._initial = dict(self.accounts)
        self._changed = threading.Condition(self._lock)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/auth"

    def reset(self) -> None:
        """Back to the initial accounts, no scripted answers, no recorded requests."""
        with self._lock:
            self.accounts = dict(self._initial)
            self._script.clear()
            self.requests.clear()

    def add_account(self, user: str, account: Account) -> None:
        with self._lock:
            self.accounts[user] = account

    def answer_next(self, *answers: Answer) -> None:
        """Use these answers, in turn, for the next requests; then the table again."""
        with self._lock:
            self._script.extend(answers)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[AuthRequest]:
        """The recorded requests once there are at least `count`."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def record(self, request: AuthRequest) -> Answer:
        """Store the request and pick its answer (a scripted one first)."""
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
            if self._script:
                return self._script.pop(0)
        return Answer(headers=tuple(self.lookup(request)))

    def lookup(self, request: AuthRequest) -> list[Header]:
        """The table-driven answer: the backend on success, the failure text otherwise."""
        user = _unescape(request.get("Auth-User") or "")
        password = _unescape(request.get("Auth-Pass") or "")
        method = request.get("Auth-Method") or ""
        with self._lock:
            account = self.accounts.get(user)
        if method == "none":  # smtp_auth none: route the envelope, nobody logs in
            host, port = self.backends["smtp"]
            return [("Auth-Status", "OK"), ("Auth-Server", host), ("Auth-Port", str(port))]
        if account is None or not _password_matches(account, method, password, request):
            return [("Auth-Status", FAILURE)]
        host, port = account.backend or self.backends[request["Auth-Protocol"]]
        answer = [("Auth-Status", "OK"), ("Auth-Server", host), ("Auth-Port", str(port))]
        if account.auth_user is not None:
            answer.append(("Auth-User", _escape(account.auth_user)))
        if account.auth_pass is not None:
            answer.append(("Auth-Pass", _escape(account.auth_pass)))
        elif method in ("apop", "cram-md5"):
            # The proxy only has the client's digest: the backend needs the plaintext.
            answer.append(("Auth-Pass", _escape(account.password)))
        return answer


def _password_matches(account: Account, method: str, password: str, request: AuthRequest) -> bool:
    if account.accept_any_password:
        return True
    salt = request.get("Auth-Salt") or ""
    if method == "apop":
        return hashlib.md5((salt + account.password).encode()).hexdigest() == password
    if method == "cram-md5":
        expected = hmac.new(account.password.encode(), salt.encode(), "md5").hexdigest()
        return hmac.compare_digest(expected, password)
    return password == account.password


def _unescape(value: str) -> str:
    return urllib.parse.unquote(value, encoding="latin-1")


def _escape(value: str) -> str:
    """nginx's mail-auth escaping: space, % and control bytes as %XX."""
    return "".join(f"%{ord(c):02X}" if c in " %" or ord(c) < 0x20 else c for c in value)


def cram_md5_response(user: str, password: str, challenge: bytes) -> str:
    """The CRAM-MD5 client line (before base64) for a decoded challenge."""
    return f"{user} {hmac.new(password.encode(), challenge, 'md5').hexdigest()}"


def apop_digest(salt: str, password: str) -> str:
    return hashlib.md5((salt + password).encode()).hexdigest()


@contextlib.contextmanager
def running_auth_server(
    backends: Mapping[str, tuple[str, int]], accounts: Mapping[str, Account]
) -> Iterator[AuthServer]:
    """Serve an `AuthServer` in a thread on a free loopback port until the block exits."""
    server = AuthServer(backends, dict(accounts))
    http_server = _Server(server)
    server.port = http_server.server_address[1]
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join(5)


@contextlib.contextmanager
def serving_on_unix(server: AuthServer, path: Path) -> Iterator[str]:
    """Also serve ``server`` (same table, same recorder) on the unix socket ``path``.

    Yields the ``auth_http`` URL. The socket is world-writable: nginx's workers run as nobody.
    """
    unix_server = _UnixServer(server, path)
    os.chmod(path, 0o666)
    thread = threading.Thread(target=unix_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix:{path}:/auth"
    finally:
        unix_server.shutdown()
        unix_server.server_close()
        thread.join(5)
        path.unlink(missing_ok=True)
