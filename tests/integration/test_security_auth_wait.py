"""``Auth-Status: WAIT`` cannot make the gateway hammer its auth server.

mailgate only: nginx asks again at once when Auth-Wait is missing or 0, for as long as the
auth server says WAIT, and keeps asking for a client that has gone.
"""

from __future__ import annotations

import time

import pytest

from tests.servers.auth_http import Answer, AuthServer
from tests.support.clients import LineClient
from tests.support.config import mail_block
from tests.support.gateway import Gateway
from tests.support.processes import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.gateway(implementations=("mailgate",))]

GATEWAY_CONFIG = mail_block(
    servers="""\
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; }
""",
)

MIN_WAIT = 1.0  # mailgate's delay for a WAIT without Auth-Wait
MAX_WAITS = 10  # WAIT answers a login may get before it is an internal error
BARE_WAIT = Answer.status("WAIT")  # no Auth-Wait header at all


def _tagged(line: bytes) -> bool:
    return line[:2] == b"a "


def test_wait_without_auth_wait_asks_again_after_the_minimum_delay(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.answer_next(BARE_WAIT, Answer.wait(0))
    started = time.monotonic()
    with LineClient(gateway.port("imap")) as client:
        client.line()
        assert client.ask(b"a LOGIN alice alice-pw", _tagged).startswith(b"a OK ")
    assert time.monotonic() - started >= 2 * MIN_WAIT
    assert len(auth_server.requests) == 3


def test_client_that_leaves_during_wait_ends_the_loop(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.answer_next(*[BARE_WAIT] * 50)
    with LineClient(gateway.port("imap")) as client:
        client.line()
        client.send(b"a LOGIN alice alice-pw\r\n")
        auth_server.wait_for_requests(1)
    assert gateway.wait_for_log("client prematurely closed connection")
    asked = len(auth_server.requests)
    time.sleep(3 * MIN_WAIT)  # a window in which a live loop would ask three more times
    assert len(auth_server.requests) == asked


def test_endless_wait_ends_in_an_internal_error(gateway: Gateway, auth_server: AuthServer) -> None:
    auth_server.answer_next(*[BARE_WAIT] * (MAX_WAITS + 5))
    with LineClient(gateway.port("imap"), timeout=MAX_WAITS * MIN_WAIT + 10) as client:
        client.line()
        assert client.ask(b"a LOGIN alice alice-pw") == b"* BAD internal server error\r\n"
        assert client.at_eof()
    assert len(auth_server.requests) == MAX_WAITS
    assert wait_until(lambda: "auth http server asked to wait 10 times" in gateway.log_text())
