"""Bytes a client or an auth server chose reach the error log and syslog escaped.

A login, a PROXY header, an SMTP command sent before the greeting or an auth server's error text
may hold control characters: ESC (which drives the terminal of an admin running ``tail -f``),
CR/LF (which would forge a log line), NUL. Each is written as ``\\xHH``, as the access log
does, in the error log file and in the syslog datagrams alike.

mailgate only: nginx writes these bytes raw (its mail log context prints the login with
``%V``; ``ngx_log_error`` escapes nothing).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pytest

from tests.servers.auth_http import Answer, AuthServer
from tests.servers.syslog import SyslogReceiver
from tests.support.clients import LineClient
from tests.support.gateway import Gateway
from tests.support.processes import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.gateway(implementations=("mailgate",))]

GATEWAY_CONFIG = """
error_log syslog:server=127.0.0.1:%%SYSLOG%%,nohostname info;

mail {
    auth_http %%AUTH_HTTP%%;
    server_name localhost;

    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; }
    server { listen 127.0.0.1:%%PORT_smtp%%; protocol smtp; }
    server { listen 127.0.0.1:%%PORT_delay%%; protocol smtp; smtp_greeting_delay 1s; }
    server {
        listen 127.0.0.1:%%PORT_proxied%% proxy_protocol;
        protocol imap;
        set_real_ip_from 127.0.0.1;
    }
}
"""

IMAP_GREETING = b"* OK IMAP4 ready\r\n"
# Clears the screen and turns the text red in the terminal of whoever reads the log.
ESC = b"\x1b[2J\x1b[31m"
ESC_SHOWN = "\\x1b[2J\\x1b[31m"


@pytest.fixture(scope="module")
def gateway_values(syslog: SyslogReceiver) -> Mapping[str, str | int]:
    return {"SYSLOG": syslog.port}


def logged_line(gateway: Gateway, text: str) -> bytes | None:
    """The first error log line holding ``text``, once it was written."""
    found: list[bytes] = []

    def written() -> bool:
        lines = gateway.error_log.read_bytes().splitlines() if gateway.error_log.exists() else []
        found[:] = [line for line in lines if text.encode() in line]
        return bool(found)

    return found[0] if wait_until(written) else None


def assert_escaped_in_both_logs(
    gateway: Gateway, syslog: SyslogReceiver, shown: str, raw: bytes
) -> None:
    """``shown`` (the escaped form) is in a line of each log, and ``raw`` in neither."""
    line, datagram = logged_line(gateway, shown), syslog.wait_for(shown)
    assert line is not None, gateway.error_log.read_bytes()[-2000:]
    assert datagram is not None, syslog.datagrams[-5:]
    for logged in (line, datagram):
        assert raw not in logged
        assert not any(byte < 0x20 or byte == 0x7F for byte in logged), logged


def imap_greeted(gateway: Gateway, port: str = "imap") -> LineClient:
    client = gateway.connect(port)
    assert client.line() == IMAP_GREETING
    return client


# --- logins, in the session's log context ---------------------------------------------------


def test_login_in_a_quoted_string_is_escaped(gateway: Gateway, syslog: SyslogReceiver) -> None:
    login = b"q" + ESC + b"user"
    with imap_greeted(gateway) as client:
        reply = client.ask(b'a LOGIN "' + login + b'" wrong-pw')
        assert reply.startswith(b"a NO ")
    assert_escaped_in_both_logs(gateway, syslog, f'login: "q{ESC_SHOWN}user"', login)


def test_login_in_a_literal_with_cr_and_esc_is_escaped(
    gateway: Gateway, syslog: SyslogReceiver
) -> None:
    login = b"lit\r" + ESC + b"\x7fuser"
    with imap_greeted(gateway) as client:
        assert client.ask(b"a LOGIN {%d}" % len(login)).startswith(b"+ ")
        assert client.ask(login + b" wrong-pw").startswith(b"a NO ")
    shown = f'login: "lit\\x0d{ESC_SHOWN}\\x7fuser"'
    assert_escaped_in_both_logs(gateway, syslog, shown, login)


def test_smtp_auth_login_name_with_nul_and_lf_is_escaped(
    gateway: Gateway, syslog: SyslogReceiver
) -> None:
    login = b"nul\x00" + ESC + b"\nuser"
    with gateway.connect("smtp") as client:
        assert client.line().startswith(b"220 ")
        client.ask(b"EHLO client.test", lambda line: line[3:4] == b" ")
        assert client.ask(b"AUTH LOGIN").startswith(b"334 ")
        assert client.ask(base64.b64encode(login)).startswith(b"334 ")
        assert client.ask(base64.b64encode(b"wrong-pw")).startswith(b"535 ")
    shown = f'login: "nul\\x00{ESC_SHOWN}\\x0auser"'
    assert_escaped_in_both_logs(gateway, syslog, shown, login)


# --- other peers' bytes ----------------------------------------------------------------------


def test_broken_proxy_header_from_a_trusted_balancer_is_escaped(
    gateway: Gateway, syslog: SyslogReceiver
) -> None:
    header = b"PROXY TCP4 " + ESC + b"\x00 192.0.2.2 5555 143\r\n"
    with gateway.connect("proxied") as client:
        client.send(header)
        assert client.at_eof()
    shown = f'broken header: "PROXY TCP4 {ESC_SHOWN}\\x00 192.0.2.2 5555 143"'
    assert_escaped_in_both_logs(gateway, syslog, shown, ESC)


def test_smtp_command_sent_before_the_greeting_is_escaped(
    gateway: Gateway, syslog: SyslogReceiver
) -> None:
    with gateway.connect("delay") as client:
        client.send(b"EHLO " + ESC + b"early.test\r\n")
        assert client.line().startswith(b"503 ")
    shown = f'client was rejected before greeting: "EHLO {ESC_SHOWN}early.test'
    assert_escaped_in_both_logs(gateway, syslog, shown, ESC)


def test_auth_server_error_text_is_escaped(
    gateway: Gateway, syslog: SyslogReceiver, auth_server: AuthServer
) -> None:
    auth_server.answer_next(Answer.status("Denied " + ESC.decode() + "by policy"))
    with imap_greeted(gateway) as client:
        assert client.ask(b"a LOGIN alice alice-pw").startswith(b"a NO ")
    shown = f'client login failed: "Denied {ESC_SHOWN}by policy"'
    assert_escaped_in_both_logs(gateway, syslog, shown, ESC)
