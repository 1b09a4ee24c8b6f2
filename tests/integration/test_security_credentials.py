"""Credentials with CR, LF or NUL are refused before anyone is asked; a static route's
backend refusal is an ordinary failed login.

mailgate only: nginx passes such credentials to the auth server and writes them verbatim
into the backend's login lines, and it has no ``proxy_pass``.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
from collections.abc import Callable, Iterator

import pytest

from tests.servers.auth_http import AuthServer
from tests.servers.dovecot import DovecotInfo
from tests.servers.postfix import PostfixInfo
from tests.support.clients import LineClient
from tests.support.config import mail_block
from tests.support.gateway import Gateway, running_gateway
from tests.support.processes import free_port

pytestmark = [pytest.mark.slow, pytest.mark.gateway(implementations=("mailgate",))]

GATEWAY_CONFIG = mail_block(
    settings=("imap_auth plain login", "pop3_auth plain", "smtp_auth plain login"),
    servers="""
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; }
    server { listen 127.0.0.1:%%PORT_pop3%%; protocol pop3; }
    server { listen 127.0.0.1:%%PORT_smtp%%; protocol smtp; }
""",
)

REFUSED_LOG = "client sent a login or password with CR, LF or NUL"


def _tagged(tag: bytes) -> Callable[[bytes], bool]:
    return lambda line: line.startswith(tag + b" ")


def _plain(user: bytes, password: bytes) -> bytes:
    return base64.b64encode(b"\0" + user + b"\0" + password)


@pytest.mark.parametrize("password", [b"pw\0x", b"pw\rx", b"pw\nx"], ids=["nul", "cr", "lf"])
def test_imap_literal_password_with_control_bytes_is_refused(
    gateway: Gateway, auth_server: AuthServer, password: bytes
) -> None:
    with LineClient(gateway.port("imap")) as client:
        client.line()
        assert client.ask(b"a LOGIN alice {%d}" % len(password)) == b"+ OK\r\n"
        assert client.ask(password, _tagged(b"a")) == b"a NO Invalid login or password\r\n"
        # The session goes on: the client may try again, and a clean login works.
        assert client.ask(b"b LOGIN alice alice-pw", _tagged(b"b")).startswith(b"b OK ")
    assert [r["Auth-User"] for r in auth_server.wait_for_requests(1)] == ["alice"]
    assert gateway.wait_for_log(REFUSED_LOG)


def test_imap_authenticate_plain_with_a_nul_in_the_password_is_refused(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with LineClient(gateway.port("imap")) as client:
        client.line()
        line = b"a AUTHENTICATE PLAIN " + _plain(b"alice", b"alice-pw\0admin")
        assert client.ask(line, _tagged(b"a")) == b"a NO Invalid login or password\r\n"
    assert auth_server.requests == []


def test_pop3_password_with_a_nul_is_refused(gateway: Gateway, auth_server: AuthServer) -> None:
    with LineClient(gateway.port("pop3")) as client:
        client.line()
        assert client.ask(b"USER alice") == b"+OK\r\n"
        assert client.ask(b"PASS alice-pw\0x") == b"-ERR Invalid login or password\r\n"
    assert auth_server.requests == []


def test_smtp_auth_plain_with_a_cr_in_the_user_is_refused(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with LineClient(gateway.port("smtp")) as client:
        client.line()
        client.ask(b"EHLO client.test", lambda line: line[3:4] == b" ")
        reply = client.ask(b"AUTH PLAIN " + _plain(b"alice\rRCPT", b"alice-pw"))
        assert reply == b"535 5.7.0 Invalid login or password\r\n"
    assert auth_server.requests == []


# --- proxy_pass: the backend is the authority ------------------------------------------------

PROXY_PASS_CONFIG = """
mail {
    server_name localhost;
    imap_auth plain login;
    pop3_auth plain;
    smtp_auth plain login;
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; proxy_pass 127.0.0.1:%%IMAP%%; }
    server { listen 127.0.0.1:%%PORT_pop3%%; protocol pop3; proxy_pass 127.0.0.1:%%POP3%%; }
    server {
        listen 127.0.0.1:%%PORT_smtp%%;
        protocol smtp;
        proxy_pass 127.0.0.1:%%SMTP%%;
        proxy_smtp_auth on;
        xclient off;
    }
}
"""


@pytest.fixture(scope="module")
def static_route(
    tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotInfo, postfix: PostfixInfo
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("static-route")
    values = {
        "IMAP": dovecot.imap_port,
        "POP3": dovecot.pop3_port,
        "SMTP": postfix.smtp_port,
        "DEAD": free_port(),
    }
    with running_gateway("mailgate", PROXY_PASS_CONFIG, folder, values, folder / "none") as gw:
        yield gw


def test_static_route_imap_wrong_password_is_the_backends_refusal(static_route: Gateway) -> None:
    imap = imaplib.IMAP4("127.0.0.1", static_route.port("imap"), timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login("alice", "wrong")
    finally:
        imap.shutdown()  # no LOGOUT: the gateway closed the session after the refusal
    assert static_route.wait_for_log("upstream sent invalid response")
    assert "internal server error" not in static_route.log_text()


def test_static_route_pop3_wrong_password_is_the_backends_refusal(static_route: Gateway) -> None:
    pop = poplib.POP3("127.0.0.1", static_route.port("pop3"), timeout=10)
    try:
        pop.user("alice")
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
            pop.pass_("wrong")
    finally:
        pop.close()


def test_static_route_smtp_wrong_password_is_the_backends_refusal(static_route: Gateway) -> None:
    smtp = smtplib.SMTP("127.0.0.1", static_route.port("smtp"), timeout=10)
    try:
        smtp.ehlo("client.test")
        smtp.user, smtp.password = "alice", "wrong"
        # One mechanism only: smtp.login() would try the next one on a closed session.
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.auth("PLAIN", smtp.auth_plain)
    finally:
        smtp.close()
    assert refused.value.smtp_code == 535


def test_static_route_right_password_still_logs_in(static_route: Gateway) -> None:
    with imaplib.IMAP4("127.0.0.1", static_route.port("imap"), timeout=10) as imap:
        assert imap.login("alice", "alice-pw")[0] == "OK"
