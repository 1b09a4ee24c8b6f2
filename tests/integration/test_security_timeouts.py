"""``timeout`` bounds each command before login, however slowly its bytes arrive.

A client must complete its login, or at least its next command, within ``timeout`` of
connecting or of its last complete command; a byte now and then does not buy more time.
Every test runs on nginx and on mailgate.
"""

from __future__ import annotations

import contextlib
import imaplib
import selectors
import socket
import threading
import time

import pytest

from tests.support.config import mail_block
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow

TIMEOUT = 3.0
GATEWAY_WORKER_CONNECTIONS = 2048  # the drippers must not be refused for want of room
GATEWAY_CONFIG = mail_block(
    settings=("timeout 3s",),
    servers="""
    server { listen 127.0.0.1:%%PORT_imap%%; protocol imap; }
""",
)
DRIPPERS = 1000
DRIP_INTERVAL = 1.0  # one byte per client this often


def _open_drippers(port: int, count: int) -> dict[socket.socket, float]:
    """``count`` connections, each with the time it connected."""
    opened: dict[socket.socket, float] = {}
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        opened[sock] = time.monotonic()
    return opened


def _drip_until_closed(opened: dict[socket.socket, float], limit: float) -> dict[float, int]:
    """Send one byte of a never-ending command on each open connection every DRIP_INTERVAL
    and note when the gateway closes it; return each closed connection's lifetime."""
    selector = selectors.DefaultSelector()
    for sock in opened:
        selector.register(sock, selectors.EVENT_READ)
    lifetimes: dict[float, int] = {}
    live = set(opened)
    next_drip = time.monotonic()
    deadline = next_drip + limit
    while live and time.monotonic() < deadline:
        if time.monotonic() >= next_drip:
            for sock in list(live):
                # A send to a closed connection fails; the read side reports the close.
                with contextlib.suppress(OSError):
                    sock.send(b"a")
            next_drip += DRIP_INTERVAL
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                lifetime = time.monotonic() - opened[sock]
                lifetimes[lifetime] = lifetimes.get(lifetime, 0) + 1
                selector.unregister(sock)
                live.discard(sock)
                sock.close()
    for sock in live:
        sock.close()
    selector.close()
    return lifetimes


def _logins_meanwhile(port: int, stop: threading.Event, results: list[bool]) -> None:
    while not stop.is_set():
        try:
            client = imaplib.IMAP4("127.0.0.1", port, timeout=5)
            client.login("alice", "alice-pw")
            client.logout()
            results.append(True)
        except (OSError, imaplib.IMAP4.error):
            results.append(False)
        stop.wait(0.2)


def test_dripping_clients_are_all_closed_at_timeout_while_logins_go_on(gateway: Gateway) -> None:
    port = gateway.port("imap")
    stop, logins = threading.Event(), list[bool]()
    others = threading.Thread(target=_logins_meanwhile, args=(port, stop, logins))
    others.start()
    try:
        opened = _open_drippers(port, DRIPPERS)
        lifetimes = _drip_until_closed(opened, TIMEOUT + 6)
    finally:
        stop.set()
        others.join()
    closed = sum(lifetimes.values())
    assert closed == DRIPPERS, f"{DRIPPERS - closed} dripping clients outlived timeout + 6 s"
    assert max(lifetimes) < TIMEOUT + 1, f"the last one lived {max(lifetimes):.1f} s"
    assert logins and all(logins), f"{logins.count(False)} of {len(logins)} logins failed"


def test_client_that_sends_a_byte_a_second_is_closed_at_timeout(gateway: Gateway) -> None:
    lifetimes = _drip_until_closed(_open_drippers(gateway.port("imap"), 1), TIMEOUT + 6)
    assert lifetimes and TIMEOUT - 0.5 < max(lifetimes) < TIMEOUT + 1
