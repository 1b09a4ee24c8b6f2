"""Session phases on a real loop against fake auth_http and backend peers (see harness.py)."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailgate.worker.observe.access_log import CloseReason
from mailgate.worker.session import upstream
from mailgate.worker.session.session import Session
from tests.unit.worker.session.harness import Harness, http_answer

GREETING = b"+OK POP3 ready\r\n"


def auth_ok(port: int) -> dict[str, str]:
    return {"Auth-Status": "OK", "Auth-Server": "127.0.0.1", "Auth-Port": str(port)}


@pytest.fixture
def make(tmp_path: Path) -> Iterator[type[Harness]]:
    made: list[Harness] = []

    class Made(Harness):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(tmp_path, *args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Made
    for harness in made:
        harness.close()


def session_of(h: Harness) -> Session:
    assert h.session is not None
    return h.session


def test_greeting_is_sent_first(make: type[Harness]) -> None:
    h = make(http_answer({}))
    h.connect()
    assert h.expect(b"\r\n") == GREETING


def test_login_accepted_by_auth_server_and_backend_then_relays(make: type[Harness]) -> None:
    h = make(http_answer(lambda _req: auth_ok(h.backend.port)))
    h.connect()
    h.expect(GREETING)
    h.send(b"USER alice\r\n")
    h.expect(b"+OK\r\n")
    h.send(b"PASS secret\r\n")
    assert h.expect(b"+OK logged in\r\n") == b"+OK logged in\r\n"
    request = h.auth.requests[0]
    assert b"Auth-User: alice\r\n" in request and b"Auth-Pass: secret\r\n" in request
    assert h.backend.requests == [b"USER alice\r\n", b"PASS secret\r\n"]
    h.send(b"STAT\r\n")
    h.expect(b"+OK 0 0\r\n")
    assert session_of(h).relay is not None
    assert any("client logged in" in line for line in h.log.infos)


def test_refused_login_gets_the_auth_server_message_and_closes(make: type[Harness]) -> None:
    h = make(http_answer({"Auth-Status": "Invalid login or password"}))
    h.connect()
    h.expect(GREETING)
    h.send(b"USER alice\r\nPASS wrong\r\n")
    h.expect(b"+OK\r\n")
    h.run_until(h.closed)
    assert bytes(h.received) == b"-ERR Invalid login or password\r\n"
    assert session_of(h).accounting.close_reason is CloseReason.AUTH_FAILED
    assert h.backend.requests == []


def test_credentials_with_a_line_break_are_refused_before_asking(make: type[Harness]) -> None:
    h = make(http_answer({}))
    h.connect()
    h.expect(GREETING)
    h.send(b"USER al\x00ice\r\nPASS secret\r\n")
    h.expect(b"-ERR Invalid login or password\r\n")
    assert h.auth.requests == []
    assert not session_of(h).closed


def test_replies_wait_while_the_client_does_not_read(make: type[Harness]) -> None:
    h = make(http_answer({}))
    client = h.connect(rcvbuf=4096)
    h.expect(GREETING)
    session = session_of(h)
    assert session.stream is not None
    session.stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stream = session.stream
    commands = 0
    while not stream.write_buffer_size:  # one command at a time until replies back up
        assert commands < 20000, "replies never backed up"
        h.send(b"CAPA\r\n")
        commands += 1
        h.run_until(lambda n=commands: stream.bytes_in >= 6 * n)
        h.run_for(0.001)
    queued = stream.write_buffer_size
    h.send(b"CAPA\r\n")
    commands += 1
    h.run_for(0.05)  # the client still reads nothing
    assert session._blocked, "commands must wait while replies are unsent"
    assert stream.write_buffer_size == queued, "no reply may be added meanwhile"
    ends = 0
    deadline = time.monotonic() + 3
    while ends < commands:
        assert time.monotonic() < deadline, f"{ends} replies"
        h.loop.run_once(max_wait=0.01)
        h.pull()
        ends = bytes(h.received).count(b"\r\n.\r\n")
    assert ends == commands
    assert client.fileno() >= 0


def test_a_dripping_client_still_times_out(make: type[Harness]) -> None:
    h = make(http_answer({}), server_extra="timeout 300ms;")
    h.connect()
    h.expect(GREETING)
    started = time.monotonic()
    closed = False
    for octet in b"USER aliceeeeeeeeeeeeeeeeeeeeeeeeee":  # never a whole command
        h.send(bytes([octet]))
        h.run_for(0.03)
        if h.closed():
            closed = True
            break
    assert closed, "the drip kept the session open past its timeout"
    assert time.monotonic() - started < 0.6
    assert session_of(h).accounting.close_reason is CloseReason.TIMEOUT
    assert any("client timed out" in line for line in h.log.infos)


def test_proxy_header_in_pieces_sets_the_client_address(make: type[Harness]) -> None:
    h = make(http_answer({}))
    listen = h.server.listens[0]
    # A listen with proxy_protocol and a trusted loopback, without a second configuration.
    object.__setattr__(listen, "proxy_protocol", True)
    trusted = (ipaddress.ip_network("127.0.0.0/8"),)
    object.__setattr__(h.server, "set_real_ip_from", trusted)
    h.connect()
    for piece in (b"PROXY TCP4 192.0", b".2.1 192.0.2.2 12", b"34 110\r\n"):
        h.send(piece)
        h.run_for(0.02)
    h.expect(GREETING)
    session = session_of(h)
    assert (session.client_addr, session.client_port) == ("192.0.2.1", 1234)
    assert session.proxy is not None and session.proxy.dst_addr == "192.0.2.2"


def test_auth_wait_asks_again_no_sooner_than_the_minimum(
    make: type[Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "MIN_AUTH_WAIT", 0.2)
    asked: list[float] = []

    def answer(_request: bytes) -> dict[str, str]:
        asked.append(time.monotonic())
        if len(asked) == 1:
            return {"Auth-Status": "WAIT", "Auth-Wait": "0"}
        return auth_ok(h.backend.port)

    h = make(http_answer(answer))
    h.connect()
    h.expect(GREETING)
    h.send(b"USER alice\r\nPASS secret\r\n")
    h.expect(b"+OK logged in\r\n")
    assert len(asked) == 2
    assert asked[1] - asked[0] >= 0.2


def test_auth_wait_gives_up_after_the_limit(
    make: type[Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "MIN_AUTH_WAIT", 0.01)
    h = make(http_answer({"Auth-Status": "WAIT"}))
    h.connect()
    h.expect(GREETING)
    h.send(b"USER alice\r\nPASS secret\r\n")
    h.run_until(h.closed)
    assert bytes(h.received).endswith(b"-ERR internal server error\r\n")
    assert len(h.auth.requests) == upstream.MAX_AUTH_WAITS
    assert any("asked to wait 10 times" in line for line in h.log.errors)
    assert session_of(h).accounting.close_reason is CloseReason.AUTH_ERROR


def test_client_leaving_during_auth_ends_the_session_and_the_request(
    make: type[Harness],
) -> None:
    h = make(http_answer(lambda _req: None))  # the auth server never answers
    client = h.connect()
    h.expect(GREETING)
    h.send(b"USER alice\r\nPASS secret\r\n")
    h.expect(b"+OK\r\n")
    h.run_until(lambda: h.auth.open == 1)
    client.shutdown(socket.SHUT_WR)
    session = session_of(h)
    h.run_until(lambda: session.closed)
    assert any("client prematurely closed connection" in line for line in h.log.infos)
    assert session.accounting.close_reason is CloseReason.CLIENT_CLOSED
    h.run_until(lambda: h.auth.open == 0)  # the auth request was cancelled, not left open
