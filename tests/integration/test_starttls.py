"""STARTTLS/STLS: nothing sent before the handshake survives it (CVE-2014-3556 in nginx).

A client, or a man in the middle, that sends ``STARTTLS`` and a second command in one write
must not see that command executed inside TLS. Every test runs on nginx and on mailgate.
"""

from __future__ import annotations

import pytest

from tests.support.config import mail_block
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    ssl=True,
    servers="""
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; starttls on; }
    server { listen 127.0.0.1:%%PORT_pop3%%; protocol pop3; starttls on; }
    server { listen 127.0.0.1:%%PORT_smtp%%; protocol smtp; starttls on; }
""",
)


def test_imap_command_injected_after_starttls_is_not_executed(gateway: Gateway) -> None:
    with gateway.connect("imap") as client:
        client.line()
        client.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
        assert client.line() == b"a OK completed\r\n"
        client.starttls(gateway.tls())
        assert client.ask(b"c NOOP") == b"c OK completed\r\n"


def test_pop3_command_injected_after_stls_is_not_executed(gateway: Gateway) -> None:
    with gateway.connect("pop3") as client:
        client.line()
        client.send(b"STLS\r\nCAPA\r\n")
        assert client.line() == b"+OK\r\n"
        client.starttls(gateway.tls())
        assert client.ask(b"NOOP") == b"+OK\r\n"


def test_smtp_command_injected_after_starttls_is_not_executed(gateway: Gateway) -> None:
    with gateway.connect("smtp") as client:
        client.line()
        client.send(b"STARTTLS\r\nEHLO evil.test\r\n")
        assert client.line() == b"220 2.0.0 Start TLS\r\n"
        client.starttls(gateway.tls())
        assert client.ask(b"NOOP") == b"250 2.0.0 OK\r\n"


def test_imap_starttls_handshake_presents_the_configured_certificate(gateway: Gateway) -> None:
    with gateway.connect("imap") as client:
        client.line()
        assert client.ask(b"a STARTTLS") == b"a OK completed\r\n"
        client.starttls(gateway.tls())  # verifies the chain and the name "localhost"
        assert client.ask(b"b CAPABILITY", lambda line: line[:2] == b"b ") == (
            b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\nb OK completed\r\n"
        )
