"""The PROXY protocol: headers read on ``listen ... proxy_protocol``, headers sent to backends.

A load balancer in front of the gateway tells it who the client is with a PROXY header (haproxy's
proxy-protocol.txt), v1 text or v2 binary, sent before the mail protocol and before TLS. With
``set_real_ip_from`` naming the balancer, that address becomes the client's (``Client-IP``);
the ``Proxy-Protocol-*`` headers tell the auth server what the header said either way.
Towards the backend, ``proxy_protocol on`` sends a v1 header with the (real) client address
first; ``v2`` is mailgate's (nginx 1.31.4's) binary form.

Every test runs on nginx and on mailgate unless marked otherwise (with the reason).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.auth_http import Account, AuthRequest, AuthServer
from tests.servers.recording import V2_SIGNATURE, RecordingImapBackend
from tests.support.clients import LineClient
from tests.support.config import mail_block
from tests.support.gateway import Gateway, running_gateway
from tests.support.pki import TlsFiles
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    ssl=True,
    servers="""
    server {
        listen 127.0.0.1:%%PORT_trusted%% proxy_protocol;
        protocol imap;
        set_real_ip_from 127.0.0.1;
    }
    server { listen 127.0.0.1:%%PORT_untrusted%% proxy_protocol; protocol imap; }
    server {
        listen 127.0.0.1:%%PORT_imaps%% ssl proxy_protocol;
        protocol imap;
        set_real_ip_from 127.0.0.0/8;
    }
    server { listen 127.0.0.1:%%PORT_to_backend%%; protocol imap; proxy_protocol on; }
    server {
        listen 127.0.0.1:%%PORT_relayed%% proxy_protocol;
        protocol imap;
        set_real_ip_from 127.0.0.1;
        proxy_protocol on;
    }
""",
)

# nginx 1.22 does not know ``proxy_protocol v2`` (it came in 1.31.4): a mailgate-only config.
V2_CONFIG = mail_block(
    servers="""\
    server { listen 127.0.0.1:%%PORT_to_backend%%; protocol imap; proxy_protocol v2; }
""",
)

GREETING = b"* OK IMAP4 ready\r\n"
BALANCER = ("192.0.2.1", "192.0.2.2", 5555, 143)  # client and balancer addresses in the header
V1_HEADER = b"PROXY TCP4 192.0.2.1 192.0.2.2 5555 143\r\n"
BACKEND_USER = "dave"  # routed to the recording backend, any password


def v2_header(src: str, dst: str, src_port: int, dst_port: int) -> bytes:
    """A binary PROXY v2 header, command PROXY over TCP, without TLVs."""
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x21 if source.version == 6 else 0x11  # AF_INET6 or AF_INET, STREAM
    body = source.packed + destination.packed + struct.pack("!HH", src_port, dst_port)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def proxied(gateway: Gateway, name: str, header: bytes, *, tls: bool = False) -> LineClient:
    """A client on port ``name`` that sent ``header`` first (then TLS with ``tls=True``)."""
    client = gateway.connect(name)
    client.send(header)
    if tls:
        client.starttls(gateway.tls())
    return client


def login(client: LineClient, user: bytes = b"alice", password: bytes = b"alice-pw") -> bytes:
    assert client.line() == GREETING
    return client.ask(b"a LOGIN " + user + b" " + password, lambda line: line[:2] == b"a ")


def only_request(auth_server: AuthServer) -> AuthRequest:
    (request,) = auth_server.wait_for_requests(1)
    return request


def proxy_lines(src: str, src_port: int, dst: str, dst_port: int) -> list[str]:
    return [
        f"Proxy-Protocol-Addr: {src}",
        f"Proxy-Protocol-Port: {src_port}",
        f"Proxy-Protocol-Server-Addr: {dst}",
        f"Proxy-Protocol-Server-Port: {dst_port}",
    ]


# --- PROXY headers from the balancer -----------------------------------------------------------


def test_v1_header_from_a_trusted_peer_becomes_the_client_address(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with proxied(gateway, "trusted", V1_HEADER) as client:
        assert login(client).startswith(b"a OK ")
    lines = list(only_request(auth_server).lines)
    assert lines[lines.index("Auth-Login-Attempt: 1") + 1 :] == [
        "Client-IP: 192.0.2.1",
        *proxy_lines("192.0.2.1", 5555, "192.0.2.2", 143),
    ]


def test_v2_header_from_a_trusted_peer_becomes_the_client_address(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    header = v2_header("2001:db8::7", "2001:db8::1", 40000, 993)
    with proxied(gateway, "trusted", header) as client:
        assert login(client).startswith(b"a OK ")
    lines = list(only_request(auth_server).lines)
    assert lines[lines.index("Auth-Login-Attempt: 1") + 1 :] == [
        "Client-IP: 2001:db8::7",
        *proxy_lines("2001:db8::7", 40000, "2001:db8::1", 993),
    ]


def test_untrusted_peer_keeps_its_address_but_the_header_is_still_reported(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with proxied(gateway, "untrusted", V1_HEADER) as client:
        assert login(client).startswith(b"a OK ")
    lines = list(only_request(auth_server).lines)
    assert lines[lines.index("Auth-Login-Attempt: 1") + 1 :] == [
        "Client-IP: 127.0.0.1",
        *proxy_lines("192.0.2.1", 5555, "192.0.2.2", 143),
    ]


def test_header_comes_before_tls_on_an_ssl_listener(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with proxied(gateway, "imaps", v2_header(*BALANCER), tls=True) as client:
        assert login(client).startswith(b"a OK ")
    request = only_request(auth_server)
    assert request["Client-IP"] == "192.0.2.1"
    assert request["Proxy-Protocol-Port"] == "5555"
    assert request["Auth-SSL"] == "on"


def test_broken_header_closes_the_connection_and_is_logged(gateway: Gateway) -> None:
    with proxied(gateway, "trusted", b"HELLO world\r\n") as client:
        assert client.at_eof()
        assert client.buffer == b""  # not even a greeting
    # nginx 1.22 also logs the CRLF inside the quotes; mailgate stops at it, as later nginx.
    assert gateway.wait_for_log('broken header: "HELLO world')


# mailgate only: nginx 1.22 peeks at the socket once and judges whatever arrived, so a header
# split across TCP segments is "broken" there; mailgate waits for the rest.
@pytest.mark.gateway(implementations=("mailgate",))
def test_header_split_across_two_writes_still_works(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with gateway.connect("trusted") as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.send(V1_HEADER[:17])
        time.sleep(0.1)  # two segments, not one: the pause is the behaviour under test
        client.send(V1_HEADER[17:])
        assert login(client).startswith(b"a OK ")
    assert only_request(auth_server)["Client-IP"] == "192.0.2.1"


# --- PROXY headers towards the backend -------------------------------------------------------


@pytest.fixture(scope="module")
def imap_backend() -> Iterator[RecordingImapBackend]:
    backend = RecordingImapBackend(proxy_protocol=True)
    yield backend
    backend.close()


@pytest.fixture
def backend_user(auth_server: AuthServer, imap_backend: RecordingImapBackend) -> bytes:
    """A user the auth server routes to the recording backend (after the per-test reset)."""
    imap_backend.preambles.clear()
    auth_server.add_account(BACKEND_USER, Account("", ("127.0.0.1", imap_backend.port), True))
    return BACKEND_USER.encode()


def last_preamble(backend: RecordingImapBackend) -> bytes:
    assert wait_until(lambda: bool(backend.preambles)), "the backend saw no connection"
    return backend.preambles[-1]


def test_proxy_protocol_on_sends_the_client_address_to_the_backend_first(
    gateway: Gateway, imap_backend: RecordingImapBackend, backend_user: bytes
) -> None:
    with gateway.connect("to_backend") as client:
        client_port = client.sock.getsockname()[1]
        assert login(client, backend_user, b"pw") == b"a OK done\r\n"
    local_port = gateway.port("to_backend")
    expected = f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {local_port}\r\n"
    assert last_preamble(imap_backend) == expected.encode()


def test_backend_header_carries_the_address_from_a_trusted_incoming_header(
    gateway: Gateway, imap_backend: RecordingImapBackend, backend_user: bytes
) -> None:
    with proxied(gateway, "relayed", V1_HEADER) as client:
        assert login(client, backend_user, b"pw") == b"a OK done\r\n"
    expected = f"PROXY TCP4 192.0.2.1 127.0.0.1 5555 {gateway.port('relayed')}\r\n"
    assert last_preamble(imap_backend) == expected.encode()


@pytest.fixture(scope="module")
def v2_gateway(
    tmp_path_factory: pytest.TempPathFactory, auth_server: AuthServer, tls_files: TlsFiles
) -> Iterator[Gateway]:
    """mailgate alone on ``V2_CONFIG`` (nginx 1.22 refuses ``proxy_protocol v2``)."""
    folder: Path = tmp_path_factory.mktemp("mailgate-v2")
    values = {"AUTH_HTTP": auth_server.url}
    with running_gateway("mailgate", V2_CONFIG, folder, values, tls_files.ca) as started:
        yield started


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bit by bit: the checksum of a v2 header's PP2_TYPE_CRC32C TLV."""
    crc = 0xFFFFFFFF
    for octet in data:
        crc ^= octet
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_proxy_protocol_v2_sends_a_binary_header_with_a_valid_checksum(
    v2_gateway: Gateway, imap_backend: RecordingImapBackend, backend_user: bytes
) -> None:
    with v2_gateway.connect("to_backend") as client:
        client_port = client.sock.getsockname()[1]
        assert login(client, backend_user, b"pw") == b"a OK done\r\n"
    header = last_preamble(imap_backend)
    assert header[:16] == V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(header) - 16)
    addresses = socket.inet_aton("127.0.0.1") * 2
    addresses += struct.pack("!HH", client_port, v2_gateway.port("to_backend"))
    assert header[16:28] == addresses
    kind, length = struct.unpack("!BH", header[-7:-4])
    assert (kind, length) == (0x03, 4), "the last TLV is PP2_TYPE_CRC32C"
    zeroed = header[:-4] + bytes(4)
    assert struct.unpack("!I", header[-4:])[0] == crc32c(zeroed)
