"""SMTP through the gateway: real clients, delivery through real Postfix, nginx's exact replies.

Every test runs on nginx and on mailgate (see ``gateway`` in conftest.py). Postfix trusts the
gateway's XCLIENT and delivers into Dovecot's maildirs, where ``wait_for_messages`` finds it.
"""

from __future__ import annotations

import base64
import smtplib
from pathlib import Path

import pytest

from tests.servers.auth_http import Answer, AuthServer
from tests.servers.dovecot import read_maildir
from tests.servers.postfix import PostfixInfo
from tests.support.clients import LineClient, make_message, run_curl, run_s_client, unique
from tests.support.config import mail_block
from tests.support.gateway import Gateway
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    ssl=True,
    servers="""
    server { listen 127.0.0.1:%%PORT_smtp%%; protocol smtp; }
    server { listen 127.0.0.1:%%PORT_starttls%%; protocol smtp; starttls on; }
    server { listen 127.0.0.1:%%PORT_only%%; protocol smtp; starttls only; }
    server { listen 127.0.0.1:%%PORT_smtps%% ssl; protocol smtp; }
    server { listen 127.0.0.1:%%PORT_errors%%; protocol smtp; max_errors 2; }
    server {
        listen 127.0.0.1:%%PORT_submission%%;
        protocol smtp;
        starttls on;
        smtp_auth plain login cram-md5;
        smtp_capabilities "SIZE 10485760" 8BITMIME;
    }
    server { listen 127.0.0.1:%%PORT_none%%; protocol smtp; smtp_auth none; }
    server { listen 127.0.0.1:%%PORT_proxyauth%%; protocol smtp; proxy_smtp_auth on; }
    server {
        listen 127.0.0.1:%%PORT_noauth%%;
        protocol smtp;
        auth_http 127.0.0.1:%%PORT_dead%%/auth;
    }
""",
)

GREETING = b"220 localhost ESMTP ready\r\n"
INTERNAL_ERROR = b"451 4.3.2 Internal server error\r\n"
INVALID = b"500 5.5.1 Invalid command\r\n"
CAROL = base64.b64encode(b"\0carol\0carol-pw")


def last_line(line: bytes) -> bool:
    return line[3:4] != b"-"


def greeted(gateway: Gateway, name: str, *, tls: bool = False) -> LineClient:
    client = gateway.connect(name, tls=tls)
    assert client.line() == GREETING
    return client


def ehlo(client: LineClient) -> bytes:
    return client.ask(b"EHLO client.test", last_line)


def smtp_client(gateway: Gateway, name: str) -> smtplib.SMTP:
    return smtplib.SMTP("localhost", gateway.port(name), local_hostname="client.test", timeout=10)


def delivered(postfix: PostfixInfo, user: str, subject: str) -> bool:
    """True once a message with ``subject`` is in the user's maildir (delivery is async)."""
    return wait_until(
        lambda: any(subject.encode() in m for m in read_maildir(postfix.maildir(user))), 10.0
    )


# --- Real clients, real Postfix ------------------------------------------------------------------


def test_smtplib_sends_through_postfix_with_xclient(gateway: Gateway, postfix: PostfixInfo) -> None:
    subject = unique("smtp")
    with smtp_client(gateway, "smtp") as smtp:
        smtp.login("carol", "carol-pw")
        smtp.sendmail("carol@client.test", [postfix.address("carol")], make_message(subject))
    assert delivered(postfix, "carol", subject)


def test_smtplib_sends_after_starttls(gateway: Gateway, postfix: PostfixInfo) -> None:
    subject = unique("smtp-starttls")
    with smtp_client(gateway, "only") as smtp:
        smtp.starttls(context=gateway.tls())
        smtp.login("carol", "carol-pw")
        smtp.sendmail("carol@client.test", [postfix.address("carol")], make_message(subject))
    assert delivered(postfix, "carol", subject)


def test_smtplib_sends_over_smtps(gateway: Gateway, postfix: PostfixInfo) -> None:
    subject = unique("smtps")
    port = gateway.port("smtps")
    with smtplib.SMTP_SSL("localhost", port, context=gateway.tls(), timeout=10) as smtp:
        smtp.login("carol", "carol-pw")
        smtp.sendmail("carol@client.test", [postfix.address("carol")], make_message(subject))
    assert delivered(postfix, "carol", subject)


def test_smtplib_sends_with_proxy_smtp_auth_through_dovecot_sasl(
    gateway: Gateway, postfix: PostfixInfo
) -> None:
    subject = unique("smtp-proxy-auth")
    with smtp_client(gateway, "proxyauth") as smtp:
        smtp.login("carol", "carol-pw")
        smtp.sendmail("carol@client.test", [postfix.address("carol")], make_message(subject))
    assert delivered(postfix, "carol", subject)


def test_smtplib_sends_without_auth_with_smtp_auth_none(
    gateway: Gateway, postfix: PostfixInfo
) -> None:
    subject = unique("smtp-none")
    with smtp_client(gateway, "none") as smtp:
        smtp.sendmail("anyone@client.test", [postfix.address("carol")], make_message(subject))
    assert delivered(postfix, "carol", subject)


def curl_send(gateway: Gateway, url: str, postfix: PostfixInfo, tmp: Path, *args: str) -> str:
    subject = unique("curl")
    message = tmp / "message.eml"
    message.write_bytes(make_message(subject, sender="carol@client.test"))
    run_curl(
        gateway,
        url,
        *("--mail-from", "carol@client.test", "--mail-rcpt", postfix.address("carol")),
        *("-u", "carol:carol-pw", "-T", str(message), *args),
    )
    return subject


def test_curl_sends_over_smtps(gateway: Gateway, postfix: PostfixInfo, tmp_path: Path) -> None:
    url = f"smtps://localhost:{gateway.port('smtps')}"
    assert delivered(postfix, "carol", curl_send(gateway, url, postfix, tmp_path))


def test_curl_sends_with_ssl_reqd_over_starttls(
    gateway: Gateway, postfix: PostfixInfo, tmp_path: Path
) -> None:
    url = f"smtp://localhost:{gateway.port('starttls')}"
    subject = curl_send(gateway, url, postfix, tmp_path, "--ssl-reqd")
    assert delivered(postfix, "carol", subject)


def test_openssl_s_client_starttls_smtp_completes(gateway: Gateway) -> None:
    spoken = run_s_client(gateway, "smtp", str(gateway.port("only")), b"EHLO client.test\nQUIT\n")
    assert spoken == b"250-localhost\r\n250 AUTH PLAIN LOGIN\r\n221 2.0.0 Bye\r\n"


# --- Byte-exact replies --------------------------------------------------------------------------


def test_greeting_names_the_server(gateway: Gateway) -> None:
    with gateway.connect("smtp") as client:
        assert client.line() == GREETING


def test_smtp_ehlo_with_starttls_off_lists_auth(gateway: Gateway) -> None:
    with greeted(gateway, "smtp") as client:
        assert ehlo(client) == b"250-localhost\r\n250 AUTH PLAIN LOGIN\r\n"


def test_smtp_ehlo_with_starttls_on_lists_starttls_last(gateway: Gateway) -> None:
    with greeted(gateway, "starttls") as client:
        assert ehlo(client) == b"250-localhost\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"


def test_smtp_ehlo_with_starttls_only_hides_auth(gateway: Gateway) -> None:
    with greeted(gateway, "only") as client:
        assert ehlo(client) == b"250-localhost\r\n250 STARTTLS\r\n"


def test_smtp_ehlo_after_starttls_lists_auth(gateway: Gateway) -> None:
    with greeted(gateway, "only") as client:
        assert client.ask(b"STARTTLS") == b"220 2.0.0 Start TLS\r\n"
        client.starttls(gateway.tls())
        assert ehlo(client) == b"250-localhost\r\n250 AUTH PLAIN LOGIN\r\n"


def test_smtp_ehlo_over_smtps_lists_auth(gateway: Gateway) -> None:
    with greeted(gateway, "smtps", tls=True) as client:
        assert ehlo(client) == b"250-localhost\r\n250 AUTH PLAIN LOGIN\r\n"


def test_smtp_ehlo_lists_configured_capabilities_in_order(gateway: Gateway) -> None:
    with greeted(gateway, "submission") as client:
        assert ehlo(client) == (
            b"250-localhost\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
            b"250-AUTH PLAIN LOGIN CRAM-MD5\r\n250 STARTTLS\r\n"
        )


def test_smtp_ehlo_with_smtp_auth_none_lists_no_auth(gateway: Gateway) -> None:
    with greeted(gateway, "none") as client:
        assert ehlo(client) == b"250 localhost\r\n"


def test_helo_noop_rset_quit(gateway: Gateway) -> None:
    with greeted(gateway, "smtp") as client:
        assert client.ask(b"HELO client.test") == b"250 localhost\r\n"
        assert client.ask(b"NOOP") == b"250 2.0.0 OK\r\n"
        assert client.ask(b"RSET") == b"250 2.0.0 OK\r\n"
        assert client.ask(b"QUIT") == b"221 2.0.0 Bye\r\n"
        assert client.at_eof()


def test_unknown_command_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "smtp") as client:
        assert client.ask(b"VRFY carol") == INVALID
        assert client.ask(b"NOOP") == b"250 2.0.0 OK\r\n"


def test_helo_without_argument_is_an_invalid_argument(gateway: Gateway) -> None:
    with greeted(gateway, "smtp") as client:
        assert client.ask(b"HELO") == b"501 5.5.4 Invalid argument\r\n"


def test_mail_before_auth_requires_authentication(gateway: Gateway) -> None:
    with greeted(gateway, "smtp") as client:
        ehlo(client)
        assert client.ask(b"MAIL FROM:<a@client.test>") == b"530 5.7.1 Authentication required\r\n"


def test_rcpt_before_mail_is_a_bad_sequence(gateway: Gateway) -> None:
    with greeted(gateway, "none") as client:
        ehlo(client)
        assert client.ask(b"RCPT TO:<carol@example.test>") == (
            b"503 5.5.1 Bad sequence of commands\r\n"
        )


def test_starttls_with_starttls_off_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "smtp") as client:
        assert client.ask(b"STARTTLS") == INVALID


def test_auth_before_starttls_with_starttls_only_is_invalid(gateway: Gateway) -> None:
    with greeted(gateway, "only") as client:
        ehlo(client)
        assert client.ask(b"AUTH PLAIN " + CAROL) == INVALID


def test_auth_login_asks_for_username_then_password(gateway: Gateway) -> None:
    with greeted(gateway, "smtp") as client:
        ehlo(client)
        assert client.ask(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        assert client.ask(base64.b64encode(b"carol")) == b"334 UGFzc3dvcmQ6\r\n"
        assert client.ask(base64.b64encode(b"carol-pw")) == b"235 2.0.0 OK\r\n"


def test_auth_plain_success_is_nginxs_own_235(gateway: Gateway) -> None:
    with greeted(gateway, "smtp") as client:
        ehlo(client)
        assert client.ask(b"AUTH PLAIN") == b"334 \r\n"
        assert client.ask(CAROL) == b"235 2.0.0 OK\r\n"


def test_max_errors_closes_after_the_second_invalid_command(gateway: Gateway) -> None:
    with greeted(gateway, "errors") as client:
        assert client.ask(b"FOO") == INVALID
        assert client.ask(b"BAR") == INVALID
        assert client.at_eof()


def test_login_failure_sends_535_with_the_auth_servers_text(gateway: Gateway) -> None:
    token = base64.b64encode(b"\0carol\0wrong")
    with greeted(gateway, "smtp") as client:
        ehlo(client)
        assert client.ask(b"AUTH PLAIN " + token) == b"535 5.7.0 Invalid login or password\r\n"
        assert client.at_eof()


def test_auth_error_code_replaces_535(gateway: Gateway, auth_server: AuthServer) -> None:
    auth_server.answer_next(Answer.status("Mailbox disabled", ("Auth-Error-Code", "550 5.7.1")))
    with greeted(gateway, "smtp") as client:
        ehlo(client)
        assert client.ask(b"AUTH PLAIN " + CAROL) == b"550 5.7.1 Mailbox disabled\r\n"


def test_login_failure_with_auth_wait_lets_the_client_retry(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.answer_next(Answer.status("Try later", ("Auth-Wait", "1")))
    with greeted(gateway, "smtp") as client:
        ehlo(client)
        assert client.ask(b"AUTH PLAIN " + CAROL) == b"535 5.7.0 Try later\r\n"
        assert client.ask(b"AUTH PLAIN " + CAROL) == b"235 2.0.0 OK\r\n"


@pytest.mark.parametrize(
    "answer",
    [Answer.garbage(), Answer.oversized(), Answer.closed()],
    ids=["garbage", "oversized", "closed"],
)
def test_broken_auth_server_answer_is_an_internal_error(
    gateway: Gateway, auth_server: AuthServer, answer: Answer
) -> None:
    auth_server.answer_next(answer)
    with greeted(gateway, "smtp") as client:
        ehlo(client)
        assert client.ask(b"AUTH PLAIN " + CAROL) == INTERNAL_ERROR
        assert client.at_eof()


def test_auth_server_down_is_an_internal_error(gateway: Gateway) -> None:
    with greeted(gateway, "noauth") as client:
        ehlo(client)
        assert client.ask(b"AUTH PLAIN " + CAROL) == INTERNAL_ERROR
        assert client.at_eof()
