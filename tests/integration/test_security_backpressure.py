"""A client that pipelines commands and never reads its replies costs the worker no memory.

As nginx: while replies to a client are unsent, the session stops reading and parsing that
client's commands; they wait in the kernel's socket buffers, and the client's own send blocks.
Every test runs on nginx and on mailgate.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import pytest

from tests.support.config import mail_block
from tests.support.gateway import Gateway
from tests.support.processes import wait_until
from tests.support.procfs import rss_kib

pytestmark = pytest.mark.slow

GATEWAY_WORKERS = 1  # one worker, so one RSS tells the whole story
GATEWAY_CONFIG = mail_block(
    settings=("ssl_certificate %%CERT%%", "ssl_certificate_key %%KEY%%"),
    servers="""
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; }
    server { listen 127.0.0.1:%%PORT_pop3%%; protocol pop3; }
    server { listen 127.0.0.1:%%PORT_smtp%%; protocol smtp; }
    server { listen 127.0.0.1:%%PORT_imaps%% ssl; protocol imap; }
    server { listen 127.0.0.1:%%PORT_pop3s%% ssl; protocol pop3; }
    server { listen 127.0.0.1:%%PORT_smtps%% ssl; protocol smtp; }
""",
)

SENT = 20 * 1024 * 1024  # what the client tries to pipeline
STALL = 1.0  # seconds a blocked send waits before the client gives up sending
ALLOWED_GROWTH_KIB = 512
# One cheap command per protocol whose reply is longer than the command.
COMMANDS = {
    "imap": b"abc CAPABILITY\r\n",
    "pop3": b"CAPA  \r\n",  # 8 bytes: a multiple fills the 128-byte buffer exactly
    "smtp": b"EHLO x\r\n",
}


def _connect(gateway: Gateway, port: str, tls: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port(port)), timeout=5)
    if tls:
        return gateway.tls().wrap_socket(sock, server_hostname="localhost")
    return sock


def _pipeline_without_reading(sock: socket.socket, command: bytes) -> int:
    """Send up to SENT bytes of ``command`` without reading; stop once the send blocks."""
    chunk = command * (65536 // len(command))
    sock.settimeout(STALL)
    sent = 0
    with contextlib.suppress(TimeoutError, ssl.SSLError):
        while sent < SENT:
            sock.sendall(chunk)
            sent += len(chunk)
    return sent


def _warm_up(gateway: Gateway, port: str, tls: bool) -> None:
    """One ordinary exchange, so first-use allocations are not counted as growth."""
    with _connect(gateway, port, tls) as sock:
        sock.settimeout(5)
        assert sock.recv(4096)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_client_that_never_reads_its_replies_does_not_grow_the_worker(
    gateway: Gateway, protocol: str, tls: bool
) -> None:
    port = protocol + ("s" if tls else "")
    (worker,) = gateway.worker_pids()
    _warm_up(gateway, port, tls)
    before = rss_kib(worker)
    with _connect(gateway, port, tls) as sock:
        sent = _pipeline_without_reading(sock, COMMANDS[protocol])
        # The worker reads what it can until it blocks; give it a moment to show growth.
        grown = wait_until(lambda: rss_kib(worker) - before > ALLOWED_GROWTH_KIB, timeout=1.0)
        after = rss_kib(worker)
    assert not grown, f"worker grew {after - before} KiB while the client sent {sent} bytes"
    assert sent < SENT, "the client's send never blocked: its commands were all read"
