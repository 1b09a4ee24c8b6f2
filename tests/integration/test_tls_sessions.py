"""TLS sessions, ALPN and the greeting's latency, through the real master and real clients.

A mail client that drops the TCP connection without a close_notify (most do, on sleep or on a
network change) must still resume its session next time: by session ID from the builtin cache
(TLS 1.2, tickets off) or by ticket (TLS 1.2 and 1.3). ``openssl s_client -sess_out`` keeps
the session of a connection that is then killed (SIGKILL: no close_notify can be sent), and
``-sess_in`` offers it again; s_client prints ``Reused`` when the server took it.

One worker (``GATEWAY_WORKERS``): the builtin cache lives in a worker, and with two the second
connection may land on the other one. Tests run on nginx and on mailgate unless marked.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.clients import read_until, s_client_argv, summary
from tests.support.config import mail_block
from tests.support.gateway import Gateway
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow

GATEWAY_WORKERS = 1
GATEWAY_CONFIG = mail_block(
    ssl=True,
    servers="""
    server {
        listen 127.0.0.1:%%PORT_cache%% ssl;
        protocol imap;
        ssl_session_cache builtin;
        ssl_session_tickets off;
    }
    server { listen 127.0.0.1:%%PORT_tickets%% ssl; protocol imap; ssl_session_tickets on; }
""",
)

GREETING = b"* OK IMAP4 ready\r\n"
TLS12_NO_TICKET = ("-tls1_2", "-no_ticket")


def greet_and_drop(gateway: Gateway, port: str, session: Path, *options: str) -> None:
    """Handshake, read the greeting, save the session, then die without a close_notify."""
    argv = s_client_argv(gateway, port, "-sess_out", str(session), *options)
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        try:
            assert GREETING in read_until(proc, GREETING)
            assert wait_until(lambda: session.exists() and session.stat().st_size > 0)
        finally:
            proc.kill()  # SIGKILL: the kernel closes the socket, OpenSSL never says goodbye


def converse(argv: list[str]) -> str:
    """Run s_client: wait for the greeting, then LOGOUT, then read until the server closes.

    Not pipelined: nginx 1.22 stalls when the first command comes with the client's Finished.
    """
    with subprocess.Popen(
        [*argv, "-crlf", "-ign_eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            before = read_until(proc, GREETING)
            stdout, stderr = proc.communicate(b"a LOGOUT\n", timeout=10)
        finally:
            proc.kill()
    output = (before + stdout).decode(errors="replace")
    assert GREETING.decode() in output, stderr
    return output


def reconnect(gateway: Gateway, port: str, session: Path, *options: str) -> str:
    """Offer the saved session; s_client's summary says ``New`` or ``Reused``."""
    return converse(s_client_argv(gateway, port, "-sess_in", str(session), *options))


# --- resumption after a connection dropped without close_notify -------------------------------


def test_tls12_session_id_resumes_from_the_builtin_cache_after_a_drop(
    gateway: Gateway, tmp_path: Path
) -> None:
    session = tmp_path / "session.pem"
    greet_and_drop(gateway, "cache", session, *TLS12_NO_TICKET)
    assert summary(reconnect(gateway, "cache", session, *TLS12_NO_TICKET)).startswith(
        "Reused, TLSv1.2"
    )


def test_tls12_ticket_resumes_after_a_drop(gateway: Gateway, tmp_path: Path) -> None:
    session = tmp_path / "session.pem"
    greet_and_drop(gateway, "tickets", session, "-tls1_2")
    assert summary(reconnect(gateway, "tickets", session, "-tls1_2")).startswith("Reused, TLSv1.2")


def test_tls13_ticket_resumes_after_a_drop(gateway: Gateway, tmp_path: Path) -> None:
    session = tmp_path / "session.pem"
    greet_and_drop(gateway, "tickets", session, "-tls1_3")
    assert summary(reconnect(gateway, "tickets", session, "-tls1_3")).startswith("Reused, TLSv1.3")


# --- ALPN ----------------------------------------------------------------------------------------


def test_alpn_with_the_protocols_own_name_is_accepted(gateway: Gateway) -> None:
    output = converse(s_client_argv(gateway, "tickets", "-alpn", "imap"))
    assert "ALPN protocol: imap" in output


def test_alpn_mismatch_is_a_fatal_alert(gateway: Gateway) -> None:
    result = subprocess.run(
        s_client_argv(gateway, "tickets", "-alpn", "foo"),
        input=b"",
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode != 0
    assert b"no application protocol" in result.stderr, result.stderr
    assert GREETING not in result.stdout


# --- the greeting right after the handshake ------------------------------------------------------


def greeting_latency(gateway: Gateway, port: str) -> float:
    """Seconds from connect() to the greeting line, over a full TLS 1.3 handshake."""
    context = gateway.tls()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    started = time.perf_counter()
    with (
        socket.create_connection(("127.0.0.1", gateway.port(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        data = b""
        while not data.endswith(b"\n"):
            chunk = tls.recv(512)
            assert chunk, "closed before the greeting"
            data += chunk
    assert data == GREETING
    return time.perf_counter() - started


# mailgate only: nginx 1.22 writes the session tickets and the greeting in two small segments
# without TCP_NODELAY, so Nagle holds the greeting until the client's delayed ACK (~40 ms).
@pytest.mark.gateway(implementations=("mailgate",))
def test_greeting_after_a_full_tls13_handshake_does_not_wait_for_a_delayed_ack(
    gateway: Gateway,
) -> None:
    samples = sorted(greeting_latency(gateway, "tickets") for _ in range(20))
    median = statistics.median(samples)
    shown = ", ".join(f"{sample * 1000:.1f}" for sample in samples)
    assert median < 0.030, f"median {median * 1000:.1f} ms; all (ms): {shown}"
