"""PROXY protocol headers that are incomplete or lie: no busy worker, no forged address.

Every test runs on nginx and on mailgate unless marked otherwise (with the reason).
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.servers.auth_http import AuthServer
from tests.support.clients import LineClient
from tests.support.config import mail_block
from tests.support.gateway import Gateway
from tests.support.procfs import cpu_seconds

pytestmark = pytest.mark.slow

GATEWAY_WORKERS = 1
GATEWAY_CONFIG = mail_block(
    servers="""
    server {
        listen 127.0.0.1:%%PORT_trusted%% proxy_protocol;
        protocol imap;
        set_real_ip_from 127.0.0.1;
    }
    server {
        listen [::]:%%PORT_dual%% ipv6only=off proxy_protocol;
        protocol imap;
        set_real_ip_from 127.0.0.0/8;
    }
""",
)

GREETING = b"* OK IMAP4 ready\r\n"
HEADER_DEADLINE = 5.0  # mailgate's own bound on reading a PROXY header
HALF_HEADERS = 500
CPU_WINDOW = 2.0


def _client_ip_after_login(
    gateway: Gateway, auth_server: AuthServer, port: str, header: bytes
) -> str:
    with LineClient(gateway.port(port)) as client:
        client.send(header)
        assert client.line() == GREETING
        assert client.ask(b"a LOGIN alice alice-pw", lambda line: line[:2] == b"a ").startswith(
            b"a OK "
        )
    (request,) = auth_server.wait_for_requests(1)
    return request["Client-IP"]


def test_half_sent_headers_cost_the_worker_no_cpu(gateway: Gateway) -> None:
    (worker,) = gateway.worker_pids()
    sockets = [
        socket.create_connection(("127.0.0.1", gateway.port("trusted")))
        for _ in range(HALF_HEADERS)
    ]
    try:
        for sock in sockets:
            sock.send(b"PROXY TCP4 ")
        time.sleep(0.2)  # let the worker see them all before the window starts
        before = cpu_seconds(worker)
        time.sleep(CPU_WINDOW)  # the measurement window itself, not a wait for an event
        used = cpu_seconds(worker) - before
    finally:
        for sock in sockets:
            sock.close()
    assert used < 0.05 * CPU_WINDOW, f"the worker used {used:.2f} s of CPU in {CPU_WINDOW} s"


# mailgate only: nginx parses whatever its single peek returned, so it closes a half-sent
# header at once as broken; mailgate waits for the rest, but not for the 60 s of ``timeout``.
@pytest.mark.gateway(implementations=("mailgate",))
def test_half_sent_header_is_closed_at_its_own_deadline(gateway: Gateway) -> None:
    with LineClient(gateway.port("trusted"), timeout=HEADER_DEADLINE + 5) as client:
        client.send(b"PROXY TCP4 ")
        started = time.monotonic()
        assert client.at_eof(timeout=HEADER_DEADLINE + 3)
        assert HEADER_DEADLINE - 0.5 < time.monotonic() - started < HEADER_DEADLINE + 1


# mailgate only: see above; a header that arrives in pieces is read without losing what
# follows it.
@pytest.mark.gateway(implementations=("mailgate",))
def test_header_sent_in_pieces_is_read_and_the_session_follows(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with LineClient(gateway.port("trusted")) as client:
        for piece in (b"PROXY TCP4 192.0.2.", b"9 192.0.2.2 ", b"5555 143\r\n"):
            client.send(piece)
            time.sleep(0.05)  # separate segments, not a wait for the gateway
        assert client.line() == GREETING
        assert client.ask(b"a LOGIN alice alice-pw", lambda line: line[:2] == b"a ")[:5] == b"a OK "
    (request,) = auth_server.wait_for_requests(1)
    assert request["Client-IP"] == "192.0.2.9"


@pytest.mark.parametrize(
    "header",
    [b"PROXY TCP4 1.2.3 192.0.2.2 5555 143\r\n", b"PROXY TCP4  192.0.2.2 5555 143\r\n"],
    ids=["three-octets", "empty"],
)
def test_source_that_is_no_ip_address_keeps_the_real_peer(
    gateway: Gateway, auth_server: AuthServer, header: bytes
) -> None:
    assert _client_ip_after_login(gateway, auth_server, "trusted", header) == "127.0.0.1"


def test_ipv4_mapped_peer_is_trusted_by_an_ipv4_network(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    header = b"PROXY TCP4 192.0.2.7 192.0.2.2 5555 143\r\n"
    assert _client_ip_after_login(gateway, auth_server, "dual", header) == "192.0.2.7"
