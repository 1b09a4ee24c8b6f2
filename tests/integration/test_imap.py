"""IMAP through the gateway: real clients against real Dovecot, and nginx's exact replies.

Every test runs on nginx and on mailgate (see ``gateway`` in conftest.py).
"""

from __future__ import annotations

import base64
import imaplib
import time
from collections.abc import Iterator

import pytest

from tests.servers.auth_http import Account, Answer, AuthServer, cram_md5_response
from tests.servers.dovecot import DovecotInfo
from tests.support.clients import LineClient, make_message, run_curl, run_s_client, unique
from tests.support.config import mail_block
from tests.support.gateway import Gateway, running_gateway
from tests.support.processes import free_port

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    ssl=True,
    servers="""
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; }
    server { listen 127.0.0.1:%%PORT_starttls%%; protocol imap; starttls on; }
    server { listen 127.0.0.1:%%PORT_only%%; protocol imap; starttls only; }
    server { listen 127.0.0.1:%%PORT_imaps%% ssl; protocol imap; }
    server { listen 127.0.0.1:%%PORT_errors%%; protocol imap; max_errors 2; }
    server {
        listen 127.0.0.1:%%PORT_cram%%;
        protocol imap;
        imap_auth plain login cram-md5;
        imap_capabilities IMAP4rev1 SEE-THIS;
    }
    server {
        listen 127.0.0.1:%%PORT_noauth%%;
        protocol imap;
        auth_http 127.0.0.1:%%PORT_dead%%/auth;
    }
""",
)

GREETING = b"* OK IMAP4 ready\r\n"
INTERNAL_ERROR = b"* BAD internal server error\r\n"


def ok_line(line: bytes) -> bool:
    """The tagged line that ends a reply (tags in these tests are one letter)."""
    return line[:1] != b"*" and line[1:2] == b" "


def greeted(gateway: Gateway, name: str, *, tls: bool = False) -> LineClient:
    """A client on port ``name`` that has read the greeting."""
    client = gateway.connect(name, tls=tls)
    assert client.line() == GREETING
    return client


def capability(client: LineClient) -> bytes:
    return client.ask(b"a CAPABILITY", ok_line)


def after_starttls(gateway: Gateway, name: str) -> LineClient:
    client = greeted(gateway, name)
    assert client.ask(b"a STARTTLS") == b"a OK completed\r\n"
    client.starttls(gateway.tls())
    return client


# --- Real clients, real Dovecot ------------------------------------------------------------------


def planted(dovecot: DovecotInfo, user: str = "alice") -> str:
    subject = unique("imap")
    dovecot.add_message(user, make_message(subject))
    return subject


def fetch_subject(imap: imaplib.IMAP4, subject: str) -> bytes:
    imap.login("alice", "alice-pw")
    imap.select("INBOX", readonly=True)
    _status, found = imap.search(None, "SUBJECT", f'"{subject}"')
    assert found[0], f"{subject} not found"
    _status, fetched = imap.fetch(found[0].split()[-1].decode(), "(RFC822)")
    assert isinstance(fetched[0], tuple)
    return fetched[0][1]


def test_imaplib_fetches_a_planted_message(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    with imaplib.IMAP4("127.0.0.1", gateway.port("imap"), timeout=10) as imap:
        assert subject.encode() in fetch_subject(imap, subject)


def test_imaplib_fetches_after_starttls(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    with imaplib.IMAP4("localhost", gateway.port("starttls"), timeout=10) as imap:
        imap.starttls(gateway.tls())
        assert subject.encode() in fetch_subject(imap, subject)


def test_imaplib_fetches_over_imaps(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    tls = gateway.tls()
    with imaplib.IMAP4_SSL("localhost", gateway.port("imaps"), ssl_context=tls, timeout=10) as imap:
        assert subject.encode() in fetch_subject(imap, subject)


def curl_fetch(gateway: Gateway, base: str, subject: str, *args: str) -> str:
    """Find the message by subject with UID SEARCH, then fetch it by UID."""
    search = f'UID SEARCH SUBJECT "{subject}"'
    found = run_curl(gateway, f"{base}/INBOX", "-u", "alice:alice-pw", "-X", search, *args)
    uid = found.split()[-1]
    return run_curl(gateway, f"{base}/INBOX;UID={uid}", "-u", "alice:alice-pw", *args)


def test_curl_fetches_over_imaps(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    base = f"imaps://localhost:{gateway.port('imaps')}"
    assert f"Subject: {subject}" in curl_fetch(gateway, base, subject)


def test_curl_fetches_with_ssl_reqd_over_starttls(gateway: Gateway, dovecot: DovecotInfo) -> None:
    subject = planted(dovecot)
    base = f"imap://localhost:{gateway.port('starttls')}"
    assert f"Subject: {subject}" in curl_fetch(gateway, base, subject, "--ssl-reqd")


def test_openssl_s_client_starttls_imap_completes(gateway: Gateway) -> None:
    spoken = run_s_client(gateway, "imap", str(gateway.port("only")), b"a CAPABILITY\na LOGOUT\n")
    assert spoken == (
        b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na OK completed\r\n"
        b"* BYE\r\na OK completed\r\n"
    )


def test_login_forwards_dovecots_tagged_ok(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        reply = client.ask(b'a LOGIN alice "alice-pw"', ok_line)
        assert reply.startswith(b"a OK "), reply
        assert b"Logged in" in reply
        selected = client.ask(b"b SELECT INBOX", lambda line: line.startswith(b"b "))
        assert selected.splitlines()[-1].startswith(b"b OK [READ-WRITE]")


def test_login_and_the_end_of_the_session_are_logged_without_an_action(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGIN alice alice-pw", ok_line).startswith(b"a OK ")
        client.ask(b"b LOGOUT", lambda line: line.startswith(b"b "))
    server = f"server: 127.0.0.1:{gateway.port('imap')}"
    assert gateway.wait_for_log(f'client logged in, client: 127.0.0.1, {server}, login: "alice"')
    assert gateway.wait_for_log(f"proxied session done, client: 127.0.0.1, {server}")


# --- Byte-exact replies --------------------------------------------------------------------------


def test_greeting_is_imap4_ready(gateway: Gateway) -> None:
    with gateway.connect("imap") as client:
        assert client.line() == GREETING


def test_imap_capability_with_starttls_off_lists_auth_plain(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert capability(client) == (
            b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na OK completed\r\n"
        )


def test_imap_capability_with_starttls_on_lists_starttls(gateway: Gateway) -> None:
    with greeted(gateway, "starttls") as client:
        assert capability(client) == (
            b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN STARTTLS\r\na OK completed\r\n"
        )


def test_imap_capability_with_starttls_only_hides_auth(gateway: Gateway) -> None:
    with greeted(gateway, "only") as client:
        assert capability(client) == (
            b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS STARTTLS LOGINDISABLED\r\na OK completed\r\n"
        )


def test_imap_capability_after_starttls_drops_starttls(gateway: Gateway) -> None:
    with after_starttls(gateway, "only") as client:
        assert capability(client) == (
            b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na OK completed\r\n"
        )


def test_imap_capability_over_imaps_lists_auth_plain(gateway: Gateway) -> None:
    with greeted(gateway, "imaps", tls=True) as client:
        assert capability(client) == (
            b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\na OK completed\r\n"
        )


def test_imap_capability_lists_configured_capabilities_and_cram_md5(gateway: Gateway) -> None:
    with greeted(gateway, "cram") as client:
        assert capability(client) == (
            b"* CAPABILITY IMAP4rev1 SEE-THIS AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5\r\n"
            b"a OK completed\r\n"
        )


def test_noop_is_completed(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a NOOP") == b"a OK completed\r\n"


def test_logout_says_bye_and_closes(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGOUT", ok_line) == b"* BYE\r\na OK completed\r\n"
        assert client.at_eof()


def test_unknown_command_is_bad_invalid_command(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a SELECT INBOX") == b"a BAD invalid command\r\n"
        assert client.ask(b"b NOOP") == b"b OK completed\r\n"


def test_starttls_with_starttls_off_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a STARTTLS") == b"a BAD invalid command\r\n"


def test_starttls_over_imaps_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "imaps", tls=True) as client:
        assert client.ask(b"a STARTTLS") == b"a BAD invalid command\r\n"


def test_login_before_starttls_with_starttls_only_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "only") as client:
        assert client.ask(b"a LOGIN alice alice-pw") == b"a BAD invalid command\r\n"


def test_max_errors_closes_after_the_second_invalid_command(gateway: Gateway) -> None:
    with greeted(gateway, "errors") as client:
        assert client.ask(b"a FOO") == b"a BAD invalid command\r\n"
        assert client.ask(b"b FOO") == b"b BAD invalid command\r\n"
        assert client.at_eof()


def test_literal_gets_a_continuation(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGIN {5}") == b"+ OK\r\n"


def test_authenticate_plain_asks_for_the_response(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a AUTHENTICATE PLAIN") == b"+ \r\n"


def test_authenticate_login_asks_for_the_username(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a AUTHENTICATE LOGIN") == b"+ VXNlcm5hbWU6\r\n"
        assert client.ask(base64.b64encode(b"alice")) == b"+ UGFzc3dvcmQ6\r\n"


def test_authenticate_plain_logs_in(gateway: Gateway) -> None:
    token = base64.b64encode(b"\0alice\0alice-pw")
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a AUTHENTICATE PLAIN " + token, ok_line).startswith(b"a OK ")


def test_authenticate_cram_md5_logs_in_with_the_plaintext_auth_pass(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with greeted(gateway, "cram") as client:
        challenge = client.ask(b"a AUTHENTICATE CRAM-MD5")
        assert challenge.startswith(b"+ ")
        salt = base64.b64decode(challenge[2:])
        answer = cram_md5_response("alice", "alice-pw", salt)
        assert client.ask(base64.b64encode(answer.encode()), ok_line).startswith(b"a OK ")
    request = auth_server.requests[-1]
    assert (request["Auth-Method"], request["Auth-Salt"]) == ("cram-md5", salt.decode())


def test_login_failure_sends_the_auth_servers_text_and_closes(gateway: Gateway) -> None:
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGIN alice wrong") == b"a NO Invalid login or password\r\n"
        assert client.at_eof()


def test_login_failure_with_auth_wait_lets_the_client_retry(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.answer_next(Answer.status("Try again later", ("Auth-Wait", "1")))
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGIN alice alice-pw") == b"a NO Try again later\r\n"
        assert client.ask(b"b LOGIN alice alice-pw", ok_line).startswith(b"b OK ")


def test_auth_status_wait_asks_again(gateway: Gateway, auth_server: AuthServer) -> None:
    # Auth-Wait 1, not 0: nginx 1.22 re-queries at once on 0 but never clears its "wait" flag,
    # so every later answer, OK included, is taken as WAIT again and it loops.
    auth_server.answer_next(Answer.wait(1))
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGIN alice alice-pw", ok_line).startswith(b"a OK ")
    assert len(auth_server.requests) == 2


# mailgate only: on WAIT with Auth-Wait 0 or none nginx 1.22 asks again at once, but keeps its
# "wait" flag set and so loops on every later answer, OK included. mailgate waits a second
# first, so a broken auth server is not asked in a tight loop.
@pytest.mark.gateway(implementations=("mailgate",))
def test_auth_status_wait_zero_asks_again_after_a_second(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.answer_next(Answer.wait(0))
    started = time.monotonic()
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGIN alice alice-pw", ok_line).startswith(b"a OK ")
    assert time.monotonic() - started >= 1.0
    assert len(auth_server.requests) == 2


def test_auth_user_and_pass_from_the_auth_server_log_in_to_the_backend(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.add_account("alias", Account("alias-pw", auth_user="bob", auth_pass="bob-pw"))
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGIN alias alias-pw", ok_line).startswith(b"a OK ")


@pytest.mark.parametrize(
    "answer",
    [Answer.garbage(), Answer.oversized(), Answer.closed()],
    ids=["garbage", "oversized", "closed"],
)
def test_broken_auth_server_answer_is_an_internal_error(
    gateway: Gateway, auth_server: AuthServer, answer: Answer
) -> None:
    auth_server.answer_next(answer)
    with greeted(gateway, "imap") as client:
        assert client.ask(b"a LOGIN alice alice-pw") == INTERNAL_ERROR
        assert client.at_eof()


def test_auth_server_down_is_an_internal_error(gateway: Gateway) -> None:
    with greeted(gateway, "noauth") as client:
        assert client.ask(b"a LOGIN alice alice-pw") == INTERNAL_ERROR
        assert client.at_eof()


# --- mailgate only -------------------------------------------------------------------------------

PROXY_PASS_CONFIG = """
mail {
    server {
        listen 127.0.0.1:%%PORT_imap%%;
        protocol imap;
        proxy_pass 127.0.0.1:%%DOVECOT_IMAP%%;
    }
}
"""


@pytest.fixture(scope="module")
def proxy_pass_gateway(
    tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotInfo
) -> Iterator[Gateway]:
    # proxy_pass is mailgate's own directive (no auth server): nginx rejects it.
    folder = tmp_path_factory.mktemp("proxy-pass")
    values = {"DOVECOT_IMAP": dovecot.imap_port, "DEAD": free_port()}
    with running_gateway("mailgate", PROXY_PASS_CONFIG, folder, values, folder / "none") as gw:
        yield gw


def test_proxy_pass_logs_in_to_dovecot_without_an_auth_server(
    proxy_pass_gateway: Gateway, dovecot: DovecotInfo
) -> None:
    subject = planted(dovecot)
    with imaplib.IMAP4("127.0.0.1", proxy_pass_gateway.port("imap"), timeout=10) as imap:
        assert subject.encode() in fetch_subject(imap, subject)
