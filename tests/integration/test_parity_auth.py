"""Logins that leave no password for the backend, the salt sent with EXTERNAL, and an
auth_http answer too large for the buffer: each as nginx does it.

Every test runs on nginx and on mailgate.
"""

from __future__ import annotations

import base64
import re

import pytest

from tests.servers.auth_http import Account, Answer, AuthServer
from tests.support.clients import LineClient
from tests.support.config import mail_block
from tests.support.gateway import Gateway
from tests.support.processes import wait_until
from tests.support.procfs import open_fds

pytestmark = pytest.mark.slow

GATEWAY_WORKERS = 1  # one worker, so its descriptors tell the whole story
GATEWAY_CONFIG = mail_block(
    settings=("smtp_auth plain login external", "pop3_auth plain apop external"),
    servers="""
    server {
        listen 127.0.0.1:%%PORT_smtp%%;
        protocol smtp;
        proxy_smtp_auth on;
        xclient off;
    }
    server { listen 127.0.0.1:%%PORT_pop3%%; protocol pop3; }
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; }
""",
)

SMTP_INTERNAL_ERROR = b"451 4.3.2 Internal server error\r\n"
POP3_INTERNAL_ERROR = b"-ERR internal server error\r\n"


@pytest.fixture
def anyone(auth_server: AuthServer) -> str:
    """A user the auth server accepts with any password, or none."""
    auth_server.add_account("anyone", Account("", accept_any_password=True))
    return "anyone"


def _smtp_greeted(gateway: Gateway) -> LineClient:
    client = LineClient(gateway.port("smtp"))
    client.line()
    client.ask(b"EHLO client.test", lambda line: line[3:4] == b" ")
    return client


def test_smtp_auth_external_with_proxy_smtp_auth_is_a_temporary_error(
    gateway: Gateway, auth_server: AuthServer, anyone: str
) -> None:
    with _smtp_greeted(gateway) as client:
        reply = client.ask(b"AUTH EXTERNAL " + base64.b64encode(anyone.encode()))
        assert reply == SMTP_INTERNAL_ERROR
    assert auth_server.wait_for_requests(1)[0]["Auth-Method"] == "external"
    assert gateway.wait_for_log("no password available")


def test_smtp_auth_plain_with_an_empty_password_is_a_temporary_error(
    gateway: Gateway, anyone: str
) -> None:
    token = base64.b64encode(b"\0" + anyone.encode() + b"\0")
    with _smtp_greeted(gateway) as client:
        assert client.ask(b"AUTH PLAIN " + token) == SMTP_INTERNAL_ERROR
    # nginx sends AUTH PLAIN with the empty password and fails on the backend's refusal;
    # mailgate sends nothing (see the README's differences): the client sees the same line.
    if gateway.implementation == "mailgate":
        assert gateway.wait_for_log("no password available")


def test_pop3_auth_external_carries_the_apop_salt(
    gateway: Gateway, auth_server: AuthServer, anyone: str
) -> None:
    with LineClient(gateway.port("pop3")) as client:
        greeting = client.line()
        found = re.fullmatch(rb"\+OK POP3 ready (<.*>)\r\n", greeting)
        assert found is not None, greeting
        reply = client.ask(b"AUTH EXTERNAL " + base64.b64encode(anyone.encode()))
        # Without Auth-Pass there is no password for the backend.
        assert reply == POP3_INTERNAL_ERROR
    (request,) = auth_server.wait_for_requests(1)
    assert request["Auth-Method"] == "external"
    assert request["Auth-Salt"] == found.group(1).decode()
    assert gateway.wait_for_log("did not send password")


def test_auth_answer_larger_than_the_buffer_closes_both_sides_without_a_log_line(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    (worker,) = gateway.worker_pids()
    baseline = open_fds(worker)
    logged = len(gateway.log_text())
    auth_server.answer_next(Answer.oversized())
    with LineClient(gateway.port("imap")) as client:
        client.line()
        assert client.ask(b"a LOGIN alice alice-pw") == b"* BAD internal server error\r\n"
        assert client.at_eof()
    # At most: sockets of the module's earlier sessions may still be closing at the baseline.
    assert wait_until(lambda: open_fds(worker) <= baseline), "the auth connection stayed open"
    assert "[error]" not in gateway.log_text()[logged:]
