"""The SMTP client name: ``resolver`` looks the client up (PTR, then a forward-confirming A).

Real dnsmasq servers answer from the records given here; the name found (or ``[UNAVAILABLE]``
/ ``[TEMPUNAVAIL]``) reaches the auth server as ``Client-Host`` and real Postfix as XCLIENT
``NAME=``, which Postfix writes into the ``Received:`` header of the delivered message.

Every test runs on nginx and on mailgate.
"""

from __future__ import annotations

import base64
import smtplib
import time
from collections.abc import Iterator, Mapping
from email import message_from_bytes

import pytest

from tests.servers.auth_http import AuthServer
from tests.servers.dns import DnsRecords, running_dnsmasq
from tests.servers.dovecot import read_maildir
from tests.servers.postfix import PostfixInfo
from tests.servers.recording import silent_udp
from tests.support.clients import LineClient, make_message, unique
from tests.support.config import mail_block
from tests.support.gateway import Gateway
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    settings=("resolver_timeout 5s",),
    servers="""
    server { listen 127.0.0.1:%%PORT_named%%; protocol smtp; resolver %%DNS_NAMED%%; }
    server { listen 127.0.0.1:%%PORT_ptr_only%%; protocol smtp; resolver %%DNS_PTR_ONLY%%; }
    server {
        listen 127.0.0.1:%%PORT_silent%%;
        protocol smtp;
        resolver %%DNS_SILENT%%;
        resolver_timeout 1s;
    }
    server { listen 127.0.0.1:%%PORT_no_resolver%%; protocol smtp; }
""",
)

CLIENT_NAME = "mail.client.test"  # PTR of 127.0.0.1, and its A record is 127.0.0.1
GHOST_NAME = "ghost.client.test"  # PTR of 127.0.0.1 on the other server, without an A record
CAROL = base64.b64encode(b"\0carol\0carol-pw")


@pytest.fixture(scope="module")
def gateway_values(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mapping[str, str | int]]:
    named = DnsRecords(hosts={CLIENT_NAME: ["127.0.0.1"]})  # dnsmasq answers its PTR too
    ptr_only = DnsRecords(ptr={"127.0.0.1": GHOST_NAME})
    folder = tmp_path_factory.mktemp("dns")
    with (
        running_dnsmasq(folder / "named", named) as named_dns,
        running_dnsmasq(folder / "ptr-only", ptr_only) as ptr_only_dns,
        silent_udp() as silent_port,
    ):
        yield {
            "DNS_NAMED": named_dns.server,
            "DNS_PTR_ONLY": ptr_only_dns.server,
            "DNS_SILENT": f"127.0.0.1:{silent_port}",
        }


def client_host(gateway: Gateway, auth_server: AuthServer, name: str) -> str:
    """Log in over SMTP on port ``name``; the ``Client-Host`` the auth server was sent."""
    with gateway.connect(name) as client:
        assert client.line() == b"220 localhost ESMTP ready\r\n"
        client.ask(b"EHLO client.test", lambda line: line[3:4] == b" ")
        assert client.ask(b"AUTH PLAIN " + CAROL) == b"235 2.0.0 OK\r\n"
    (request,) = auth_server.wait_for_requests(1)
    return request["Client-Host"]


def received_from(gateway: Gateway, postfix: PostfixInfo, name: str) -> str:
    """Send a message through port ``name``; the first ``Received:`` header Postfix wrote."""
    subject = unique("resolver")
    with smtplib.SMTP("127.0.0.1", gateway.port(name), local_hostname="client.test") as smtp:
        smtp.login("carol", "carol-pw")
        smtp.sendmail("carol@client.test", [postfix.address("carol")], make_message(subject))
    found: list[bytes] = []

    def arrived() -> bool:
        found[:] = [m for m in read_maildir(postfix.maildir("carol")) if subject.encode() in m]
        return bool(found)

    assert wait_until(arrived, 10.0)
    return " ".join(str(message_from_bytes(found[0])["Received"]).split())


def test_forward_confirmed_name_is_sent_to_the_auth_server(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    assert client_host(gateway, auth_server, "named") == CLIENT_NAME


def test_forward_confirmed_name_reaches_postfix_in_xclient(
    gateway: Gateway, postfix: PostfixInfo
) -> None:
    assert received_from(gateway, postfix, "named").startswith(
        f"from client.test ({CLIENT_NAME} [127.0.0.1])"
    )


def test_ptr_name_without_an_address_is_unavailable_and_logged(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    assert client_host(gateway, auth_server, "ptr_only") == "[UNAVAILABLE]"
    assert gateway.wait_for_log(f'"{GHOST_NAME}" could not be resolved (3: Host not found)')


def test_unavailable_name_reaches_postfix_as_unknown(
    gateway: Gateway, postfix: PostfixInfo
) -> None:
    assert received_from(gateway, postfix, "ptr_only").startswith(
        "from client.test (unknown [127.0.0.1])"
    )


def test_silent_resolver_gives_tempunavail_after_resolver_timeout(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    assert client_host(gateway, auth_server, "silent") == "[TEMPUNAVAIL]"
    assert gateway.wait_for_log("127.0.0.1 could not be resolved (110: Operation timed out)")


def test_silent_resolver_delays_the_greeting_by_about_resolver_timeout(gateway: Gateway) -> None:
    with LineClient(gateway.port("silent"), timeout=5) as client:
        started = time.monotonic()
        assert client.line() == b"220 localhost ESMTP ready\r\n"
        assert 0.8 < time.monotonic() - started < 3.0


def test_without_a_resolver_the_name_is_unavailable(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    assert client_host(gateway, auth_server, "no_resolver") == "[UNAVAILABLE]"
