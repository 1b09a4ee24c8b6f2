"""POP3 through the gateway: real clients against real Dovecot, and nginx's exact replies.

Every test runs on nginx and on mailgate (see ``gateway`` in conftest.py).
"""

from __future__ import annotations

import base64
import poplib
import re

import pytest

from tests.servers.auth_http import Answer, AuthServer, apop_digest
from tests.servers.dovecot import DovecotInfo
from tests.support.clients import LineClient, make_message, run_curl, run_s_client, unique
from tests.support.config import mail_block
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    ssl=True,
    servers="""
    server { listen 127.0.0.1:%%PORT_pop3%%; protocol pop3; }
    server { listen 127.0.0.1:%%PORT_starttls%%; protocol pop3; starttls on; }
    server { listen 127.0.0.1:%%PORT_only%%; protocol pop3; starttls only; }
    server { listen 127.0.0.1:%%PORT_pop3s%% ssl; protocol pop3; }
    server { listen 127.0.0.1:%%PORT_errors%%; protocol pop3; max_errors 2; }
    server {
        listen 127.0.0.1:%%PORT_apop%%;
        protocol pop3;
        pop3_auth plain apop cram-md5;
        pop3_capabilities TOP "SEE THIS";
    }
    server {
        listen 127.0.0.1:%%PORT_noauth%%;
        protocol pop3;
        auth_http 127.0.0.1:%%PORT_dead%%/auth;
    }
""",
)

GREETING = b"+OK POP3 ready\r\n"
INTERNAL_ERROR = b"-ERR internal server error\r\n"
INVALID = b"-ERR invalid command\r\n"
CAPA = b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n"


def end_of_list(line: bytes) -> bool:
    return line == b".\r\n"


def greeted(gateway: Gateway, name: str, *, tls: bool = False) -> LineClient:
    client = gateway.connect(name, tls=tls)
    assert client.line() == GREETING
    return client


def capa(client: LineClient) -> bytes:
    return client.ask(b"CAPA", end_of_list)


def planted(dovecot: DovecotInfo) -> str:
    subject = unique("pop3")
    dovecot.add_message("bob", make_message(subject))
    return subject


def retrieve_newest(pop: poplib.POP3) -> list[bytes]:
    pop.user("bob")
    pop.pass_("bob-pw")
    count, _size = pop.stat()
    _response, lines, _octets = pop.retr(count)
    return lines


# --- Real clients, real Dovecot ------------------------------------------------------------------


def test_poplib_retrieves_a_planted_message(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    pop = poplib.POP3("127.0.0.1", gateway.port("pop3"), timeout=10)
    try:
        assert f"Subject: {subject}".encode() in retrieve_newest(pop)
    finally:
        pop.quit()


def test_poplib_retrieves_after_stls(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    pop = poplib.POP3("localhost", gateway.port("starttls"), timeout=10)
    try:
        pop.stls(gateway.tls())
        assert f"Subject: {subject}".encode() in retrieve_newest(pop)
    finally:
        pop.quit()


def test_poplib_retrieves_over_pop3s(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    pop = poplib.POP3_SSL("localhost", gateway.port("pop3s"), context=gateway.tls(), timeout=10)
    try:
        assert f"Subject: {subject}".encode() in retrieve_newest(pop)
    finally:
        pop.quit()


def curl_retrieve_newest(gateway: Gateway, base: str, *args: str) -> str:
    listing = run_curl(gateway, f"{base}/", "-u", "bob:bob-pw", *args)
    newest = listing.split()[-2]  # the last "<number> <size>" line
    return run_curl(gateway, f"{base}/{newest}", "-u", "bob:bob-pw", *args)


def test_curl_retrieves_over_pop3s(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    base = f"pop3s://localhost:{gateway.port('pop3s')}"
    assert f"Subject: {subject}" in curl_retrieve_newest(gateway, base)


def test_curl_retrieves_with_ssl_reqd_over_stls(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    base = f"pop3://localhost:{gateway.port('starttls')}"
    assert f"Subject: {subject}" in curl_retrieve_newest(gateway, base, "--ssl-reqd")


def test_openssl_s_client_starttls_pop3_completes(gateway: Gateway) -> None:
    spoken = run_s_client(gateway, "pop3", str(gateway.port("only")), b"CAPA\nQUIT\n")
    assert spoken == CAPA + b".\r\n+OK\r\n"


def test_apop_logs_in_with_the_plaintext_auth_pass(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with gateway.connect("apop") as client:
        greeting = client.line()
        salt = re.fullmatch(rb"\+OK POP3 ready (<[0-9]+\.[0-9]+@localhost>)\r\n", greeting)
        assert salt, greeting
        digest = apop_digest(salt.group(1).decode(), "bob-pw")
        assert client.ask(f"APOP bob {digest}".encode()).startswith(b"+OK")
        assert client.ask(b"STAT").startswith(b"+OK ")
    request = auth_server.requests[-1]
    assert (request["Auth-Method"], request["Auth-Salt"]) == ("apop", salt.group(1).decode())


# --- Byte-exact replies --------------------------------------------------------------------------


def test_greeting_is_pop3_ready(gateway: Gateway) -> None:
    with gateway.connect("pop3") as client:
        assert client.line() == GREETING


def test_pop3_capa_with_starttls_off_lists_sasl(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert capa(client) == CAPA + b".\r\n"


def test_pop3_capa_with_starttls_on_lists_stls(gateway: Gateway) -> None:
    with greeted(gateway, "starttls") as client:
        assert capa(client) == CAPA + b"STLS\r\n.\r\n"


def test_pop3_capa_with_starttls_only_hides_user_and_sasl(gateway: Gateway) -> None:
    with greeted(gateway, "only") as client:
        assert capa(client) == b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n"


def test_pop3_capa_after_stls_is_the_plain_list(gateway: Gateway) -> None:
    with greeted(gateway, "only") as client:
        assert client.ask(b"STLS") == b"+OK\r\n"
        client.starttls(gateway.tls())
        assert capa(client) == CAPA + b".\r\n"


def test_pop3_capa_over_pop3s_lists_sasl(gateway: Gateway) -> None:
    with greeted(gateway, "pop3s", tls=True) as client:
        assert capa(client) == CAPA + b".\r\n"


def test_pop3_capa_lists_configured_capabilities_and_methods(gateway: Gateway) -> None:
    with gateway.connect("apop") as client:
        client.line()
        assert capa(client) == (
            b"+OK Capability list follows\r\nTOP\r\nSEE THIS\r\nSASL PLAIN LOGIN CRAM-MD5\r\n.\r\n"
        )


def test_auth_without_a_mechanism_lists_the_methods(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert (
            client.ask(b"AUTH", end_of_list) == b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        )


def test_auth_login_asks_for_username_then_password(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert client.ask(b"AUTH LOGIN") == b"+ VXNlcm5hbWU6\r\n"
        assert client.ask(base64.b64encode(b"bob")) == b"+ UGFzc3dvcmQ6\r\n"
        assert client.ask(base64.b64encode(b"bob-pw")).startswith(b"+OK")


def test_auth_plain_asks_for_the_response(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert client.ask(b"AUTH PLAIN") == b"+ \r\n"


def test_noop_and_quit(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert client.ask(b"NOOP") == b"+OK\r\n"
        assert client.ask(b"QUIT") == b"+OK\r\n"
        assert client.at_eof()


def test_unknown_command_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert client.ask(b"STAT") == INVALID
        assert client.ask(b"NOOP") == b"+OK\r\n"


def test_pass_before_user_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert client.ask(b"PASS bob-pw") == INVALID


def test_stls_with_starttls_off_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert client.ask(b"STLS") == INVALID


def test_user_before_stls_with_starttls_only_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "only") as client:
        assert client.ask(b"USER bob") == INVALID


def test_max_errors_closes_after_the_second_invalid_command(gateway: Gateway) -> None:
    with greeted(gateway, "errors") as client:
        assert client.ask(b"FOO") == INVALID
        assert client.ask(b"BAR") == INVALID
        assert client.at_eof()


def test_login_failure_sends_the_auth_servers_text_and_closes(gateway: Gateway) -> None:
    with greeted(gateway, "pop3") as client:
        assert client.ask(b"USER bob") == b"+OK\r\n"
        assert client.ask(b"PASS wrong") == b"-ERR Invalid login or password\r\n"
        assert client.at_eof()


def test_login_failure_with_auth_wait_lets_the_client_retry(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.answer_next(Answer.status("Slow down", ("Auth-Wait", "1")))
    with greeted(gateway, "pop3") as client:
        client.ask(b"USER bob")
        assert client.ask(b"PASS bob-pw") == b"-ERR Slow down\r\n"
        client.ask(b"USER bob")
        assert client.ask(b"PASS bob-pw").startswith(b"+OK")


@pytest.mark.parametrize(
    "answer",
    [Answer.garbage(), Answer.oversized(), Answer.closed()],
    ids=["garbage", "oversized", "closed"],
)
def test_broken_auth_server_answer_is_an_internal_error(
    gateway: Gateway, auth_server: AuthServer, answer: Answer
) -> None:
    auth_server.answer_next(answer)
    with greeted(gateway, "pop3") as client:
        client.ask(b"USER bob")
        assert client.ask(b"PASS bob-pw") == INTERNAL_ERROR
        assert client.at_eof()


def test_auth_server_down_is_an_internal_error(gateway: Gateway) -> None:
    with greeted(gateway, "noauth") as client:
        client.ask(b"USER bob")
        assert client.ask(b"PASS bob-pw") == INTERNAL_ERROR
        assert client.at_eof()
