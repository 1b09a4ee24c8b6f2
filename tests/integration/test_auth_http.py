"""The auth_http request as the auth server receives it: header order, values and escaping.

Every test runs on nginx and on mailgate (see ``gateway`` in conftest.py); the auth server
records the raw header lines, so these assertions are about the bytes on the wire.
"""

from __future__ import annotations

import base64
import re

import pytest

from tests.servers.auth_http import Answer, AuthRequest, AuthServer, apop_digest
from tests.support.clients import LineClient
from tests.support.config import mail_block
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    ssl=True,
    servers="""
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; starttls on; }
    server { listen 127.0.0.1:%%PORT_imaps%% ssl; protocol imap; }
    server { listen 127.0.0.1:%%PORT_pop3%%; protocol pop3; pop3_auth plain apop; }
    server { listen 127.0.0.1:%%PORT_smtp%%; protocol smtp; }
    server { listen 127.0.0.1:%%PORT_none%%; protocol smtp; smtp_auth none; }
    server {
        listen 127.0.0.1:%%PORT_secret%%;
        protocol imap;
        auth_http_header X-Auth-Key "s3cret";
        auth_http_header X-Other two;
    }
""",
)

TLS13 = ["Auth-SSL: on", "Auth-SSL-Protocol: TLSv1.3", "Auth-SSL-Cipher: TLS_AES_256_GCM_SHA384"]


def imap_login(client: LineClient, user: bytes, password: bytes) -> bytes:
    """LOGIN with two literals, so any byte can be sent; returns the tagged reply."""
    assert client.line() == b"* OK IMAP4 ready\r\n"
    assert client.ask(b"a LOGIN {%d}" % len(user)) == b"+ OK\r\n"
    assert client.ask(user + b" {%d}" % len(password)) == b"+ OK\r\n"
    return client.ask(password, lambda line: line.startswith(b"a "))


def only_request(auth_server: AuthServer) -> AuthRequest:
    (request,) = auth_server.wait_for_requests(1)
    return request


def test_imap_login_sends_nginxs_headers_in_order(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with gateway.connect("imap") as client:
        assert imap_login(client, b"alice", b"alice-pw").startswith(b"a OK ")
    request = only_request(auth_server)
    assert request.request_line == "GET /auth HTTP/1.0"
    assert list(request.lines) == [
        "Host: 127.0.0.1",
        "Auth-Method: plain",
        "Auth-User: alice",
        "Auth-Pass: alice-pw",
        "Auth-Protocol: imap",
        "Auth-Login-Attempt: 1",
        "Client-IP: 127.0.0.1",
    ]


def test_auth_http_header_lines_come_last_in_config_order(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with gateway.connect("secret") as client:
        imap_login(client, b"alice", b"alice-pw")
    assert list(only_request(auth_server).lines[-2:]) == ["X-Auth-Key: s3cret", "X-Other: two"]


def test_space_percent_and_control_bytes_are_escaped(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with gateway.connect("imap") as client:
        # No CR or LF: mailgate refuses those before asking (test_security_credentials.py).
        reply = imap_login(client, b"a b%c", b"pq\tr\x01 \x7f\xe9%")
        assert reply == b"a NO Invalid login or password\r\n"
    request = only_request(auth_server)
    assert request["Auth-User"] == "a%20b%25c"
    assert request["Auth-Pass"] == "pq%09r%01%20\x7f\xe9%25"


def test_authenticate_login_is_reported_as_plain(gateway: Gateway, auth_server: AuthServer) -> None:
    with gateway.connect("imap") as client:
        client.line()
        client.ask(b"a AUTHENTICATE LOGIN")
        client.ask(base64.b64encode(b"alice"))
        client.ask(base64.b64encode(b"alice-pw"), lambda line: line.startswith(b"a "))
    assert only_request(auth_server)["Auth-Method"] == "plain"


def test_apop_sends_the_digest_and_the_salt(gateway: Gateway, auth_server: AuthServer) -> None:
    with gateway.connect("pop3") as client:
        salt = re.fullmatch(rb"\+OK POP3 ready (<.*>)\r\n", client.line())
        assert salt is not None
        digest = apop_digest(salt.group(1).decode(), "bob-pw")
        assert client.ask(f"APOP bob {digest}".encode()).startswith(b"+OK")
    assert list(only_request(auth_server).lines) == [
        "Host: 127.0.0.1",
        "Auth-Method: apop",
        "Auth-User: bob",
        f"Auth-Pass: {digest}",
        f"Auth-Salt: {salt.group(1).decode()}",
        "Auth-Protocol: pop3",
        "Auth-Login-Attempt: 1",
        "Client-IP: 127.0.0.1",
    ]


def test_login_attempt_counts_up_after_a_failure_with_auth_wait(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.answer_next(Answer.status("Try again", ("Auth-Wait", "1")))
    with gateway.connect("imap") as client:
        assert imap_login(client, b"alice", b"alice-pw") == b"a NO Try again\r\n"
        assert client.ask(b"b LOGIN alice alice-pw", lambda line: line[:2] == b"b ").startswith(
            b"b OK "
        )
    attempts = [request["Auth-Login-Attempt"] for request in auth_server.wait_for_requests(2)]
    assert attempts == ["1", "2"]


def test_imaps_adds_the_tls_headers_after_client_ip(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with gateway.connect("imaps", tls=True) as client:
        imap_login(client, b"alice", b"alice-pw")
    lines = list(only_request(auth_server).lines)
    assert lines[lines.index("Client-IP: 127.0.0.1") + 1 :] == TLS13


def test_starttls_adds_the_tls_headers(gateway: Gateway, auth_server: AuthServer) -> None:
    with gateway.connect("imap") as client:
        client.line()
        assert client.ask(b"a STARTTLS") == b"a OK completed\r\n"
        client.starttls(gateway.tls())
        client.ask(b"b LOGIN alice alice-pw", lambda line: line[:2] == b"b ")
    assert list(only_request(auth_server).lines[-3:]) == TLS13


def test_smtp_auth_sends_client_host_unavailable_without_a_resolver(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    token = base64.b64encode(b"\0carol\0carol-pw")
    with gateway.connect("smtp") as client:
        client.line()
        client.ask(b"EHLO client.test", lambda line: line[3:4] == b" ")
        assert client.ask(b"AUTH PLAIN " + token) == b"235 2.0.0 OK\r\n"
    assert list(only_request(auth_server).lines) == [
        "Host: 127.0.0.1",
        "Auth-Method: plain",
        "Auth-User: carol",
        "Auth-Pass: carol-pw",
        "Auth-Protocol: smtp",
        "Auth-Login-Attempt: 1",
        "Client-IP: 127.0.0.1",
        "Client-Host: [UNAVAILABLE]",
    ]


def test_smtp_auth_none_sends_helo_from_and_to(gateway: Gateway, auth_server: AuthServer) -> None:
    with gateway.connect("none") as client:
        client.line()
        client.ask(b"EHLO client.test", lambda line: line[3:4] == b" ")
        assert client.ask(b"MAIL FROM:<a@client.test> SIZE=100") == b"250 2.0.0 OK\r\n"
        assert client.ask(b"RCPT TO:<carol@example.test>").startswith(b"250 ")
    assert list(only_request(auth_server).lines) == [
        "Host: 127.0.0.1",
        "Auth-Method: none",
        "Auth-User: ",
        "Auth-Pass: ",
        "Auth-Protocol: smtp",
        "Auth-Login-Attempt: 1",
        "Client-IP: 127.0.0.1",
        "Client-Host: [UNAVAILABLE]",
        "Auth-SMTP-Helo: client.test",
        "Auth-SMTP-From: MAIL FROM:<a@client.test> SIZE=100",
        "Auth-SMTP-To: RCPT TO:<carol@example.test>",
    ]
