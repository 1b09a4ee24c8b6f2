"""Hostile clients: injected credentials, oversized input, slow talkers, early talkers.

Every test runs on nginx and on mailgate unless marked otherwise (with the reason).
"""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.servers.auth_http import Account, AuthServer
from tests.support.config import mail_block
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    servers="""
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; }
    server { listen 127.0.0.1:%%PORT_pop3%%; protocol pop3; }
    server { listen 127.0.0.1:%%PORT_slow%%; protocol imap; timeout 2s; }
    server { listen 127.0.0.1:%%PORT_delay%%; protocol smtp; smtp_greeting_delay 1s; }
""",
)


class RecordingBackend:
    """A fake IMAP or POP3 backend that accepts any login and records its command lines.

    IMAP literals are read as data, not as commands, exactly as a real server would.
    """

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.commands: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _addr = self.listener.accept()
                with conn, conn.makefile("rwb") as stream:
                    self._session(stream)

    def _session(self, stream: io.BufferedIOBase) -> None:
        greeting = b"* OK fake\r\n" if self.protocol == "imap" else b"+OK fake\r\n"
        stream.write(greeting)
        stream.flush()
        tag = b""
        while line := stream.readline():
            self.commands.append(line.rstrip(b"\r\n"))
            tag = tag or line.split(b" ", 1)[0]
            if self.protocol == "imap" and line.rstrip().endswith(b"}"):
                size = int(line.rstrip()[:-1].rsplit(b"{", 1)[1])
                stream.write(b"+ go\r\n")
                stream.flush()
                self.commands.append(b"<literal " + stream.read(size) + b">")
                continue  # the rest of the line still belongs to the same command
            stream.write(tag + b" OK done\r\n" if self.protocol == "imap" else b"+OK\r\n")
            stream.flush()
            tag = b""

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def backend(request: pytest.FixtureRequest, auth_server: AuthServer) -> Iterator[RecordingBackend]:
    """A recording backend of the test's protocol, where user "mallory" (any password) goes."""
    fake = RecordingBackend(request.param)
    auth_server.add_account("mallory", Account("", ("127.0.0.1", fake.port), True))
    yield fake
    fake.close()


@pytest.mark.parametrize("backend", ["imap"], indirect=True)
def test_crlf_in_an_imap_password_never_becomes_a_backend_command(
    gateway: Gateway, backend: RecordingBackend
) -> None:
    password = b"x\r\nb DELETE INBOX\x00"
    with gateway.connect("imap") as client:
        client.line()
        assert client.ask(b"a LOGIN mallory {%d}" % len(password)) == b"+ OK\r\n"
        # nginx logs in with the password inside a literal ("a OK done"); mailgate refuses
        # it before asking anyone (test_security_credentials.py).
        assert client.ask(password)[:5] in (b"a OK ", b"a NO ")
    assert not [line for line in backend.commands if b"DELETE" in line and b"literal" not in line]


# mailgate only: nginx 1.22 decodes AUTH PLAIN and writes the password into "PASS ...\r\n"
# verbatim, so a CRLF in it becomes a second backend command whenever the auth server accepts
# such a password (here: one that accepts any). It relies on the auth server; mailgate must not.
@pytest.mark.gateway(implementations=("mailgate",))
@pytest.mark.parametrize("backend", ["pop3"], indirect=True)
def test_crlf_in_a_pop3_auth_plain_password_is_not_a_backend_command(
    gateway: Gateway, backend: RecordingBackend
) -> None:
    token = base64.b64encode(b"\0mallory\0x\r\nDELE 1")
    with gateway.connect("pop3") as client:
        client.line()
        client.ask(b"AUTH PLAIN " + token)
        client.at_eof(timeout=2)
    assert b"DELE 1" not in backend.commands


def test_oversized_imap_literal_is_refused(gateway: Gateway) -> None:
    with gateway.connect("imap") as client:
        client.line()
        assert client.ask(b"a LOGIN alice {100000}") == b"+ OK\r\n"
        client.send(b"x" * 100000)
        assert client.line() == b"a BAD invalid command\r\n"
        assert client.at_eof()
    with gateway.connect("imap") as other:
        assert other.line() == b"* OK IMAP4 ready\r\n"
        assert other.ask(b"b NOOP") == b"b OK completed\r\n"


def test_over_long_imap_line_is_refused_and_closed(gateway: Gateway) -> None:
    with gateway.connect("imap") as client:
        client.line()
        client.send(b"a NOOP " + b"x" * 20000 + b"\r\n")
        assert client.line() == b"a BAD invalid command\r\n"
        assert client.at_eof()
    with gateway.connect("imap") as other:
        assert other.line() == b"* OK IMAP4 ready\r\n"


def test_client_that_never_finishes_a_line_is_closed_at_timeout(gateway: Gateway) -> None:
    with gateway.connect("slow") as client:
        assert client.line() == b"* OK IMAP4 ready\r\n"
        started = time.monotonic()
        client.send(b"a NOO")
        assert client.at_eof(timeout=6)
        assert 1.5 < time.monotonic() - started < 5


def test_smtp_early_talker_is_rejected_before_the_greeting(gateway: Gateway) -> None:
    with gateway.connect("delay") as client:
        client.send(b"EHLO early.test\r\n")
        assert client.line() == b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
        assert client.at_eof()
    assert gateway.wait_for_log('client was rejected before greeting: "EHLO early.test__"')


def test_smtp_patient_client_is_greeted_after_the_delay(gateway: Gateway) -> None:
    with gateway.connect("delay") as client:
        started = time.monotonic()
        assert client.line() == b"220 localhost ESMTP ready\r\n"
        assert time.monotonic() - started > 0.8
