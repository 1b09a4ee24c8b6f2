"""DNS sockets of the SMTP client-name lookup: bounded per query, and freed with the lookup.

The worker looks every SMTP client up (``resolver``) before its greeting. Here both resolver
servers answer the PTR query at once and never answer the A/AAAA queries that would confirm
the name, so each session waits ``resolver_timeout`` with two queries (A and AAAA) pending
while the resolver resends them from one server to the other. The worker's descriptors are
counted from ``/proc/<pid>/fd`` meanwhile: a session may hold its client socket plus one UDP
socket per server per pending query, however often a query is resent, and nothing once its
lookup is over.

Every test runs on nginx and on mailgate unless marked otherwise (with the reason). nginx keeps
one UDP socket per resolver server for all queries, opened on first use: the warm-up session
opens them before the baseline is taken.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from tests.servers.ports import LOOPBACK
from tests.support.clients import LineClient
from tests.support.gateway import Gateway
from tests.support.processes import wait_until
from tests.support.procfs import udp_sockets

pytestmark = pytest.mark.slow

GATEWAY_WORKERS = 1  # every session on the worker whose descriptors are counted
RESOLVER_TIMEOUT = 3.0
SERVERS = 2
PARALLEL_QUERIES = 2  # A and AAAA
SESSIONS = 8
GREETING = b"220 localhost ESMTP ready\r\n"

# The resend interval is resolver_timeout / (servers + 1) = 1 s: each query is sent three
# times before it times out, the third time to the server it started with.
GATEWAY_CONFIG = f"""
mail {{
    auth_http %%AUTH_HTTP%%;
    server_name localhost;

    server {{
        listen 127.0.0.1:%%PORT_smtp%%;
        protocol smtp;
        resolver %%DNS_ONE%% %%DNS_TWO%%;
        resolver_timeout {RESOLVER_TIMEOUT:g}s;
    }}
}}
"""


@contextlib.contextmanager
def ptr_only_dns(name: str) -> Iterator[str]:
    """A DNS server answering every PTR query with ``name`` and no other query at all."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            question = query.question[0]
            if question.rdtype != dns.rdatatype.PTR:
                continue  # the forward lookup hangs
            reply = dns.message.make_response(query)
            reply.answer.append(dns.rrset.from_text(question.name, 300, "IN", "PTR", name))
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{LOOPBACK}:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        sock.close()


@pytest.fixture(scope="module")
def gateway_values() -> Iterator[Mapping[str, str | int]]:
    with ptr_only_dns("mail.client.test.") as one, ptr_only_dns("mail.client.test.") as two:
        yield {"DNS_ONE": one, "DNS_TWO": two}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass(frozen=True)
class FdCounts:
    """The worker's descriptors around ``SESSIONS`` lookups that time out."""

    baseline: int  # idle, after one warm-up session
    peak: int  # the most seen while the lookups were pending
    greeted: int  # once every session had its greeting: every lookup is over
    ended: bool  # back to the baseline once the clients left


@pytest.fixture(scope="module")
def worker(gateway: Gateway) -> int:
    """The only worker, after a warm-up session: the PTR answer is cached from then on."""
    (pid,) = gateway.worker_pids()
    with LineClient(gateway.port("smtp"), timeout=RESOLVER_TIMEOUT + 5) as client:
        assert client.line() == GREETING
        assert client.ask(b"QUIT").startswith(b"221 ")
        assert client.at_eof()
    # The warm-up's forward lookup may still be asking (its sockets last until its own
    # timeout); the baseline is taken once only the idle DNS sockets are left: none for
    # mailgate, one per server for nginx, which keeps its resolver connections open.
    idle = SERVERS if gateway.implementation == "nginx" else 0
    assert wait_until(lambda: udp_sockets(pid) == idle, RESOLVER_TIMEOUT + 3)
    return pid


@pytest.fixture(scope="module")
def timed_out_lookups(gateway: Gateway, worker: int) -> FdCounts:
    baseline = open_fds(worker)
    clients = [
        LineClient(gateway.port("smtp"), timeout=RESOLVER_TIMEOUT + 5) for _ in range(SESSIONS)
    ]
    waiting = list(clients)
    peak = baseline

    def all_greeted() -> bool:
        nonlocal peak
        peak = max(peak, open_fds(worker))
        readable, _, _ = select.select([client.sock for client in waiting], [], [], 0)
        for client in [c for c in waiting if c.sock in readable]:
            assert client.line() == GREETING
            waiting.remove(client)
        return not waiting

    try:
        assert wait_until(all_greeted, RESOLVER_TIMEOUT * 2 + 5)
        greeted = open_fds(worker)
    finally:
        for client in clients:
            client.close()
    ended = wait_until(lambda: open_fds(worker) == baseline)
    return FdCounts(baseline, peak, greeted, ended)


def test_pending_lookups_hold_at_most_one_dns_socket_per_server_per_query(
    timed_out_lookups: FdCounts,
) -> None:
    per_session = 1 + SERVERS * PARALLEL_QUERIES  # the client, and the DNS sockets
    assert timed_out_lookups.peak <= timed_out_lookups.baseline + SESSIONS * per_session


def test_dns_sockets_are_closed_when_the_lookup_times_out(timed_out_lookups: FdCounts) -> None:
    # The greeting follows the lookup: by then only the client sockets are left.
    assert timed_out_lookups.greeted == timed_out_lookups.baseline + SESSIONS


def test_descriptors_return_to_the_baseline_when_the_sessions_end(
    timed_out_lookups: FdCounts,
) -> None:
    assert timed_out_lookups.ended


def test_client_leaving_mid_lookup_leaves_no_descriptor_behind(
    gateway: Gateway, worker: int
) -> None:
    baseline = open_fds(worker)
    clients = [LineClient(gateway.port("smtp")) for _ in range(SESSIONS)]
    try:
        assert wait_until(lambda: open_fds(worker) >= baseline + SESSIONS)  # all accepted
    finally:
        for client in clients:
            client.close()
    # Like nginx, the worker does not read from the client during the lookup, so it sees the
    # client gone only after the lookup timed out: the session ends then.
    assert wait_until(lambda: open_fds(worker) == baseline, RESOLVER_TIMEOUT + 3)
