"""The auth_http request, as ``ngx_mail_auth_http_create_request`` writes it (sans-IO).

The session opens a new connection per request (HTTP/1.0, no keepalive), writes
:func:`build_request`'s bytes and reads the answer with
:class:`mailgate.worker.auth_http.response.AuthResponseParser`. Header order, escaping and which
optional lines appear follow nginx exactly, because auth servers written for nginx parse
these bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mailgate.config.model import HttpURL, Protocol, ServerConfig, VerifyClient
from mailgate.worker.proxy_protocol.codec import ProxyInfo

# The client's auth method -> Auth-Method (ngx_mail_auth_http_method[]): SASL LOGIN is reported
# as "plain", and "login" is never sent. "login" is still a distinct input because nginx sends
# Auth-Salt (and then forgets the password) for every method but PLAIN when a salt exists.
AUTH_METHODS: Mapping[str, bytes] = MappingProxyType(
    {
        "plain": b"plain",
        "login": b"plain",
        "apop": b"apop",
        "cram-md5": b"cram-md5",
        "external": b"external",
        "none": b"none",
    }
)

UNAVAILABLE = "[UNAVAILABLE]"  # no resolver, or NXDOMAIN
TEMPUNAVAIL = "[TEMPUNAVAIL]"  # resolver failure, unix-socket client, or an invalid name
_HOST_NAME = re.compile(r"[A-Za-z0-9.-]+")  # CVE-2026-28753: a PTR name is data, not syntax

# NGX_ESCAPE_MAIL_AUTH (the "memcached" table of ngx_escape_uri): space, "%" and the control
# bytes become %XX in uppercase hex; everything else, 0x7F and up included, is copied.
_UNSAFE = frozenset(range(0x20)) | {ord(" "), ord("%")}
_ESCAPED = tuple(b"%%%02X" % octet if octet in _UNSAFE else bytes([octet]) for octet in range(256))


def escape(value: bytes) -> bytes:
    """nginx's escaping of Auth-User, Auth-Pass and Auth-SSL-Cert: no header can be split."""
    return b"".join(_ESCAPED[octet] for octet in value)


def client_host_value(name: str) -> str:
    """The Client-Host / XCLIENT NAME= value for a resolved name: the name when it is made of
    ``[A-Za-z0-9.-]`` (or is already one of the bracketed markers), else ``[TEMPUNAVAIL]``
    (nginx: "resolved to invalid host name")."""
    if name in (UNAVAILABLE, TEMPUNAVAIL) or _HOST_NAME.fullmatch(name):
        return name
    return TEMPUNAVAIL


def auth_peer_name(url: HttpURL) -> str:
    """The auth server as nginx names it in log lines (``ctx->peer.name``)."""
    if url.unix_path is not None:
        return f"unix:{url.unix_path}"
    if ":" in url.host:
        return f"[{url.host}]:{url.port}"
    return f"{url.host}:{url.port}"


@dataclass(frozen=True, slots=True)
class ClientTls:
    """The client connection's TLS facts that go into the Auth-SSL-* headers."""

    protocol: str  # SSL_get_version(): "TLSv1.3"
    cipher: str  # "TLS_AES_256_GCM_SHA384"
    # Sent only when ssl_verify_client is not off; empty values are left out, as nginx does.
    verify: str = ""  # "SUCCESS" | "FAILED:<reason>" | "NONE"
    subject: str = ""  # RFC 2253
    issuer: str = ""
    serial: str = ""  # uppercase hex
    fingerprint: str = ""  # SHA-1, lowercase hex
    cert_pem: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What one auth_http request says about a login attempt.

    ``salt`` is the ``<rand.time@server_name>`` challenge without its CRLF; ``client_host`` is
    set for SMTP only; ``proxy`` is the PROXY header received on the listener, if any;
    ``smtp_helo`` / ``smtp_from`` / ``smtp_to`` are the HELO argument and the whole MAIL FROM
    and first RCPT TO lines (sent for ``method="none"`` only).
    """

    protocol: Protocol
    method: str
    user: bytes
    password: bytes = field(repr=False)
    client_ip: str
    login_attempt: int = 1
    salt: bytes = b""
    client_host: str | None = None
    proxy: ProxyInfo | None = None
    smtp_helo: bytes = b""
    smtp_from: bytes = b""
    smtp_to: bytes = b""
    tls: ClientTls | None = None

    def __post_init__(self) -> None:
        if self.method not in AUTH_METHODS:
            raise ValueError(f"unknown auth method {self.method!r}")

    @property
    def sends_salt(self) -> bool:
        """nginx sends Auth-Salt for any method but PLAIN once a salt exists, and then clears
        the password: the auth server must answer with Auth-Pass (IMAP, POP3)."""
        return self.method != "plain" and bool(self.salt)


def _line(name: bytes, value: bytes) -> bytes:
    if b"\r" in value or b"\n" in value:
        # Every value is escaped, validated or CRLF-free by construction; this is our bug.
        raise ValueError(f"{name.decode()} value would split the auth_http request")
    return name + b": " + value + b"\r\n"


def _credentials(request: AuthRequest) -> Iterator[tuple[bytes, bytes]]:
    none = request.method == "none"  # stale credentials are never sent (CVE-2025-53859)
    yield b"Auth-Method", AUTH_METHODS[request.method]
    yield b"Auth-User", b"" if none else escape(request.user)
    yield b"Auth-Pass", b"" if none else escape(request.password)
    if request.sends_salt:
        yield b"Auth-Salt", request.salt


def _client(request: AuthRequest) -> Iterator[tuple[bytes, bytes]]:
    yield b"Auth-Protocol", request.protocol.value.encode()
    yield b"Auth-Login-Attempt", b"%d" % request.login_attempt
    yield b"Client-IP", request.client_ip.encode()
    if request.client_host:
        yield b"Client-Host", client_host_value(request.client_host).encode()
    if request.proxy is not None:
        yield b"Proxy-Protocol-Addr", request.proxy.src_addr.encode()
        yield b"Proxy-Protocol-Port", b"%d" % request.proxy.src_port
        yield b"Proxy-Protocol-Server-Addr", request.proxy.dst_addr.encode()
        yield b"Proxy-Protocol-Server-Port", b"%d" % request.proxy.dst_port
    if request.method == "none":
        yield b"Auth-SMTP-Helo", request.smtp_helo
        yield b"Auth-SMTP-From", request.smtp_from
        yield b"Auth-SMTP-To", request.smtp_to


def _tls(config: ServerConfig, tls: ClientTls | None) -> Iterator[tuple[bytes, bytes]]:
    if tls is None:
        return
    verifying = config.ssl_verify_client is not VerifyClient.OFF
    cert = escape(tls.cert_pem) if verifying and config.auth_http_pass_client_cert else b""
    yield b"Auth-SSL", b"on"
    optional = [
        (b"Auth-SSL-Protocol", tls.protocol.encode()),
        (b"Auth-SSL-Cipher", tls.cipher.encode()),
        (b"Auth-SSL-Verify", tls.verify.encode() if verifying else b""),
        (b"Auth-SSL-Subject", tls.subject.encode() if verifying else b""),
        (b"Auth-SSL-Issuer", tls.issuer.encode() if verifying else b""),
        (b"Auth-SSL-Serial", tls.serial.encode() if verifying else b""),
        (b"Auth-SSL-Fingerprint", tls.fingerprint.encode() if verifying else b""),
        (b"Auth-SSL-Cert", cert),
    ]
    yield from ((name, value) for name, value in optional if value)


def build_request(config: ServerConfig, request: AuthRequest) -> bytes:
    """The whole HTTP/1.0 request to ``config.auth_http`` for ``request``, byte for byte."""
    url = config.auth_http
    if url is None:
        raise ValueError("no auth_http for this server")
    head = b"GET " + url.uri.encode() + b" HTTP/1.0\r\n" + _line(b"Host", url.host_header.encode())
    fields = [*_credentials(request), *_client(request), *_tls(config, request.tls)]
    extra = [(name.encode(), value.encode()) for name, value in config.auth_http_header]
    return head + b"".join(_line(name, value) for name, value in fields + extra) + b"\r\n"
