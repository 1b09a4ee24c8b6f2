"""The SMTP client-name resolver against a real dnsmasq, driven by the worker's own Loop.

Addresses are from the documentation ranges (192.0.2.0/24, 2001:db8::/32): the resolver never
connects to the client, it only looks its address up, so no such host has to exist.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mailgate.config.model import Protocol, ServerConfig, Source
from mailgate.worker.io.loop import Loop
from mailgate.worker.resolver import wire
from mailgate.worker.resolver.client import (
    TEMPUNAVAIL,
    TIMEDOUT,
    UNAVAILABLE,
    Resolver,
    Server,
    strerror,
)
from tests.servers.dns import DnsInfo, DnsRecords, running_dnsmasq

RECORDS = DnsRecords(
    ptr={
        "192.0.2.6": "other.test",  # other.test's A is another address: not confirmed
        "192.0.2.8": "bad_name.test",  # "_" is outside [A-Za-z0-9.-]
        "192.0.2.9": "gone.test",  # no A/AAAA at all
    },
    hosts={
        "mail.test": ["192.0.2.5", "2001:db8::5"],  # also gives both PTRs
        "other.test": ["192.0.2.99"],
        "v4.test": ["192.0.2.10"],
    },
)
NO_PTR = "192.0.2.7"
REFUSED = "198.51.100.1"  # outside everything dnsmasq knows, and it has no upstream


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsInfo]:
    with running_dnsmasq(tmp_path_factory.mktemp("dnsmasq"), RECORDS) as info:
        yield info


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A UDP port that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def closed_port() -> str:
    """A UDP port nothing is bound to: the kernel answers with ICMP port unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def loop() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    # Whatever a test did, a finished or cancelled lookup leaves no socket on the loop.
    assert not loop.selector.get_map()
    loop.close()


def resolve(resolver: Resolver, address: str, limit: float = 10.0) -> tuple[str, str | None]:
    """Run the loop in this thread until ``on_done`` fires; return what it was given."""
    results: list[tuple[str, str | None]] = []
    resolver.client_host(address, lambda host, log: results.append((host, log)))
    deadline = time.monotonic() + limit
    while not results:
        assert time.monotonic() < deadline, f"no answer for {address} in {limit}s"
        resolver.loop.run_once(0.1)
    assert len(results) == 1
    return results[0]


def make(
    loop: Loop,
    *servers: str,
    timeout: float = 5.0,
    valid: float | None = None,
    ipv4: bool = True,
    ipv6: bool = True,
) -> Resolver:
    return Resolver(loop, servers, timeout=timeout, valid=valid, ipv4=ipv4, ipv6=ipv6)


# --- outcomes -----------------------------------------------------------------------------


def test_confirmed_name(loop: Loop, dns_server: DnsInfo) -> None:
    assert resolve(make(loop, dns_server.server), "192.0.2.5") == ("mail.test", None)


def test_forward_lookup_without_the_client_is_unavailable_without_log(
    loop: Loop, dns_server: DnsInfo
) -> None:
    assert resolve(make(loop, dns_server.server), "192.0.2.6") == (UNAVAILABLE, None)


def test_no_ptr_is_unavailable(loop: Loop, dns_server: DnsInfo) -> None:
    log = f"{NO_PTR} could not be resolved (3: Host not found)"
    assert resolve(make(loop, dns_server.server), NO_PTR) == (UNAVAILABLE, log)


def test_name_without_addresses_is_unavailable(loop: Loop, dns_server: DnsInfo) -> None:
    log = '"gone.test" could not be resolved (3: Host not found)'
    assert resolve(make(loop, dns_server.server), "192.0.2.9") == (UNAVAILABLE, log)


def test_refused_is_tempunavail(loop: Loop, dns_server: DnsInfo) -> None:
    log = f"{REFUSED} could not be resolved (5: Operation refused)"
    assert resolve(make(loop, dns_server.server), REFUSED) == (TEMPUNAVAIL, log)


def test_invalid_ptr_name_is_tempunavail(loop: Loop, dns_server: DnsInfo) -> None:
    log = "192.0.2.8 resolved to invalid host name"
    assert resolve(make(loop, dns_server.server), "192.0.2.8") == (TEMPUNAVAIL, log)


def test_ipv6_client(loop: Loop, dns_server: DnsInfo) -> None:
    assert resolve(make(loop, dns_server.server), "2001:db8::5") == ("mail.test", None)
    ptr = wire.reverse_name(ipaddress.ip_address("2001:db8::5"))
    assert f"PTR {ptr.to_text(omit_final_dot=True)}" in dns_server.queries()


def test_ipv4_mapped_client_is_an_ipv4_client(loop: Loop, dns_server: DnsInfo) -> None:
    assert resolve(make(loop, dns_server.server), "::ffff:192.0.2.5") == ("mail.test", None)


def test_ipv6_off_asks_for_a_only(loop: Loop, dns_server: DnsInfo) -> None:
    resolver = make(loop, dns_server.server, ipv6=False)
    assert resolve(resolver, "192.0.2.10") == ("v4.test", None)
    queries = dns_server.queries()
    assert "A v4.test" in queries
    assert "AAAA v4.test" not in queries


def test_ipv4_off_cannot_confirm_an_ipv4_client(loop: Loop, dns_server: DnsInfo) -> None:
    resolver = make(loop, dns_server.server, ipv4=False)
    assert resolve(resolver, "192.0.2.5") == (UNAVAILABLE, None)


def test_resolver_off_and_unix_clients(loop: Loop) -> None:
    assert resolve(make(loop), "192.0.2.5") == (UNAVAILABLE, None)
    assert resolve(make(loop, "127.0.0.1:53"), "unix:") == (TEMPUNAVAIL, None)


def test_not_an_address_is_refused_at_once(loop: Loop) -> None:
    with pytest.raises(ValueError):
        make(loop, "127.0.0.1:53").client_host("mail.test", lambda host, log: None)


# --- timeouts and failover ----------------------------------------------------------------


def test_silent_server_times_out(loop: Loop, silent_server: str) -> None:
    started = time.monotonic()
    host, log = resolve(make(loop, silent_server, timeout=0.5), "192.0.2.5")
    elapsed = time.monotonic() - started
    assert (host, log) == (
        TEMPUNAVAIL,
        "192.0.2.5 could not be resolved (110: Operation timed out)",
    )
    assert 0.5 <= elapsed < 2.0


def test_fails_over_from_a_silent_server(
    loop: Loop, silent_server: str, dns_server: DnsInfo
) -> None:
    started = time.monotonic()
    resolver = make(loop, silent_server, dns_server.server, timeout=1.5)
    assert resolve(resolver, "192.0.2.5") == ("mail.test", None)
    assert time.monotonic() - started < 3.0  # each step needed at most one resend (0.5 s)


def test_skips_a_refusing_server_without_waiting(
    loop: Loop, closed_port: str, dns_server: DnsInfo
) -> None:
    started = time.monotonic()
    resolver = make(loop, closed_port, dns_server.server, timeout=20.0)
    assert resolve(resolver, "192.0.2.5") == ("mail.test", None)
    assert time.monotonic() - started < 1.0  # far below the 5 s resend interval


def test_resends_reuse_one_socket_per_server(loop: Loop) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as one,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as two,
    ):
        for sock in (one, two):
            sock.bind(("127.0.0.1", 0))
        servers = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in (one, two)]
        # Resent every 0.2 s: the PTR query goes out three times, the third to the first server.
        resolver = make(loop, *servers, timeout=0.6)
        results: list[str] = []
        resolver.client_host("192.0.2.5", lambda host, _: results.append(host))
        most = 0
        while not results:
            loop.run_once(0.02)
            most = max(most, len(loop.selector.get_map()))
        assert results == [TEMPUNAVAIL]
        assert most == 2  # not one socket per send
        (first, source), (again, same_source) = one.recvfrom(512), one.recvfrom(512)
        assert (again, same_source) == (first, source)  # the same query from the same port


def test_round_robin_spreads_queries(loop: Loop, silent_server: str, dns_server: DnsInfo) -> None:
    resolver = make(loop, silent_server, dns_server.server, timeout=1.5)
    assert [resolver.next_server() for _ in range(4)] == [0, 1, 0, 1]


# --- cache --------------------------------------------------------------------------------


def test_cache_hit_sends_no_query(loop: Loop, dns_server: DnsInfo) -> None:
    resolver = make(loop, dns_server.server)
    assert resolve(resolver, "192.0.2.5") == ("mail.test", None)
    before = len(dns_server.queries())

    results: list[tuple[str, str | None]] = []
    resolver.client_host("192.0.2.5", lambda host, log: results.append((host, log)))
    assert not results  # never from inside client_host
    loop.run_once(1.0)
    assert results == [("mail.test", None)]
    assert not loop.selector.get_map()  # no socket was ever opened

    # dnsmasq logs queries in order: once a later query is in the log, none came in between.
    assert resolve(resolver, NO_PTR)[0] == UNAVAILABLE
    assert dns_server.queries()[before:] == ["PTR 7.2.0.192.in-addr.arpa"]


def test_valid_overrides_the_ttl(loop: Loop, dns_server: DnsInfo) -> None:
    resolver = make(loop, dns_server.server, valid=0.0)  # dnsmasq says 300 s; valid=0 wins
    assert resolve(resolver, "192.0.2.5") == ("mail.test", None)
    before = len(dns_server.queries())
    assert resolve(resolver, "192.0.2.5") == ("mail.test", None)
    assert dns_server.queries()[before:][:1] == ["PTR 5.2.0.192.in-addr.arpa"]


def test_errors_are_not_cached(loop: Loop, dns_server: DnsInfo) -> None:
    resolver = make(loop, dns_server.server)
    resolve(resolver, NO_PTR)
    before = len(dns_server.queries())
    resolve(resolver, NO_PTR)
    assert dns_server.queries()[before:] == ["PTR 7.2.0.192.in-addr.arpa"]


# --- cancel -------------------------------------------------------------------------------


def test_cancel_before_the_answer_leaves_nothing_on_the_loop(
    loop: Loop, silent_server: str
) -> None:
    results: list[tuple[str, str | None]] = []
    resolver = make(loop, silent_server, timeout=0.3)
    cancel = resolver.client_host("192.0.2.5", lambda host, log: results.append((host, log)))
    loop.run_once(0.05)  # the PTR query is out now
    assert loop.selector.get_map()
    cancel()
    assert not loop.selector.get_map()
    assert all(timer.cancelled for timer in loop._timers)
    cancel()  # twice is harmless
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        loop.run_once(0.05)
    assert results == []


def test_cancel_before_the_first_loop_turn(loop: Loop, dns_server: DnsInfo) -> None:
    results: list[str] = []
    cancel = make(loop, dns_server.server).client_host("192.0.2.5", lambda h, _: results.append(h))
    cancel()
    loop.run_once(0.1)
    assert results == []
    assert all(timer.cancelled for timer in loop._timers)


# --- configuration and the wire -----------------------------------------------------------


def test_from_config() -> None:
    config = ServerConfig(
        source=Source("mail.conf", 1),
        listens=(),
        protocol=Protocol.SMTP,
        resolver=("127.0.0.1:5353", "[::1]:53"),
        resolver_valid=60.0,
        resolver_ipv6=False,
        resolver_timeout=2.0,
    )
    loop = Loop()
    resolver = Resolver.from_config(loop, config)
    loop.close()
    assert resolver.servers == (
        Server(socket.AF_INET, "127.0.0.1", 5353),
        Server(socket.AF_INET6, "::1", 53),
    )
    assert (resolver.timeout, resolver.valid, resolver.ipv4, resolver.ipv6) == (
        2.0,
        60.0,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("text", "server"),
    [
        ("10.0.0.1", Server(socket.AF_INET, "10.0.0.1", 53)),
        ("10.0.0.1:5353", Server(socket.AF_INET, "10.0.0.1", 5353)),
        ("[2001:db8::1]", Server(socket.AF_INET6, "2001:db8::1", 53)),
        ("2001:db8::1", Server(socket.AF_INET6, "2001:db8::1", 53)),
    ],
)
def test_server_parse(text: str, server: Server) -> None:
    assert Server.parse(text) == server


def test_strerror_is_nginx_text() -> None:
    assert [strerror(code) for code in (1, 2, 3, 4, 5, TIMEDOUT, 9)] == [
        "Format error",
        "Server failure",
        "Host not found",
        "Unimplemented",
        "Operation refused",
        "Operation timed out",
        "Unknown error",
    ]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("mail.example.com", True),
        ("MX-1.Example.COM", True),
        ("bad_name.test", False),
        ("evil\r\nX-Injected: 1.test", False),
        ("sp ace.test", False),
        ("caf\xe9.test", False),
        ("a..b", False),
        ("", False),
    ],
)
def test_host_name_rule(name: str, valid: bool) -> None:
    assert (wire.host_name(name) is not None) == valid


def reply_to(
    query: wire.Query, *records: str, rcode: dns.rcode.Rcode = dns.rcode.NOERROR
) -> dns.message.Message:
    reply = dns.message.make_response(query.message)
    reply.set_rcode(rcode)
    for text in records:
        name, ttl, rdclass, rdtype, data = text.split(" ", 4)
        reply.answer.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, data))
    return reply


def test_parse_reply_ignores_other_ids_and_questions() -> None:
    query = wire.make_query(dns.name.from_text("mail.test"), wire.A)
    other = wire.make_query(dns.name.from_text("other.test"), wire.A)
    good = reply_to(query, "mail.test. 60 IN A 192.0.2.5")
    assert wire.parse_reply(query, good.to_wire()) == wire.Answer(0, ("192.0.2.5",), 60)
    assert wire.parse_reply(other, good.to_wire()) is None
    assert wire.parse_reply(query, b"\x00garbage") is None


def test_parse_reply_follows_cnames() -> None:
    query = wire.make_query(dns.name.from_text("www.test"), wire.A)
    chained = reply_to(query, "www.test. 30 IN CNAME mail.test.", "mail.test. 60 IN A 192.0.2.5")
    assert wire.parse_reply(query, chained.to_wire()) == wire.Answer(0, ("192.0.2.5",), 30)
    dangling = reply_to(query, "www.test. 30 IN CNAME mail.test.")
    answer = wire.parse_reply(query, dangling.to_wire())
    assert answer == wire.Answer(0, (), 30, cname=dns.name.from_text("mail.test"))


def test_parse_reply_keeps_raw_ptr_bytes() -> None:
    """A CR inside a label must reach the name check as a CR, not as dnspython's "\\013"."""
    query = wire.make_query(dns.name.from_text("8.2.0.192.in-addr.arpa"), wire.PTR)
    reply = dns.message.make_response(query.message)
    evil = dns.name.Name([b"evil\r\nX-Injected: 1", b"test", b""])
    rrset = dns.rrset.from_text(query.qname, 60, "IN", "PTR", "placeholder.test.")
    rrset = dns.rrset.from_rdata(query.qname, 60, rrset[0].replace(target=evil))
    reply.answer.append(rrset)
    answer = wire.parse_reply(query, reply.to_wire())
    assert answer is not None
    assert answer.values == ("evil\r\nx-injected: 1.test",)  # lower-cased, as nginx
    assert wire.host_name(answer.values[0]) is None


def test_parse_reply_error_codes_and_truncation() -> None:
    query = wire.make_query(dns.name.from_text("mail.test"), wire.A)
    refused = reply_to(query, rcode=dns.rcode.REFUSED)
    assert wire.parse_reply(query, refused.to_wire()) == wire.Answer(5)
    truncated = reply_to(query)
    truncated.flags |= dns.flags.TC
    assert wire.parse_reply(query, truncated.to_wire()) == wire.Answer(wire.SERVFAIL)


PTR_QUERY = wire.make_query(dns.name.from_text("5.2.0.192.in-addr.arpa"), wire.PTR)
A_QUERY = wire.make_query(dns.name.from_text("mail.test"), wire.A)


def with_flags(reply: dns.message.Message, flags: int) -> dns.message.Message:
    reply.flags |= flags
    return reply


@pytest.mark.parametrize(
    ("query", "reply"),
    [
        (PTR_QUERY, reply_to(PTR_QUERY, rcode=dns.rcode.FORMERR)),
        (PTR_QUERY, reply_to(PTR_QUERY, rcode=dns.rcode.NOTAUTH)),
        (
            PTR_QUERY,
            with_flags(
                reply_to(PTR_QUERY, "5.2.0.192.in-addr.arpa. 60 IN PTR mail.test."), dns.flags.AD
            ),
        ),
        (PTR_QUERY, reply_to(PTR_QUERY, "5.2.0.192.in-addr.arpa. 60 CH PTR mail.test.")),
        (PTR_QUERY, reply_to(PTR_QUERY, "2.0.192.in-addr.arpa. 60 IN DNAME d.test.")),
        (PTR_QUERY, reply_to(PTR_QUERY, "5.2.0.192.in-addr.arpa. 60 IN CNAME 5.d.test.")),
        (A_QUERY, reply_to(A_QUERY, "mail.test. 60 IN AAAA 2001:db8::5")),
    ],
    ids=["formerr", "notauth", "ad-flag", "class-ch", "dname-alone", "cname-alone", "aaaa-in-a"],
)
def test_parse_reply_drops_what_nginx_drops(query: wire.Query, reply: dns.message.Message) -> None:
    assert wire.parse_reply(query, reply.to_wire()) is None


def test_ptr_answer_is_the_first_ptr_record_whatever_its_owner_in_lower_case() -> None:
    reply = reply_to(
        PTR_QUERY,
        "5.2.0.192.in-addr.arpa. 60 IN CNAME 5.d.test.",
        "elsewhere.test. 30 IN PTR Mail.TEST.",
        "other.test. 60 IN PTR second.test.",
    )
    assert wire.parse_reply(PTR_QUERY, reply.to_wire()) == wire.Answer(0, ("mail.test",), 30)


def test_empty_ptr_answer_is_host_not_found_even_when_truncated() -> None:
    truncated = with_flags(reply_to(PTR_QUERY), dns.flags.TC)
    assert wire.parse_reply(PTR_QUERY, truncated.to_wire()) == wire.Answer(3)


def test_address_records_count_whatever_their_owner() -> None:
    reply = reply_to(A_QUERY, "elsewhere.test. 60 IN A 192.0.2.5")
    assert wire.parse_reply(A_QUERY, reply.to_wire()) == wire.Answer(0, ("192.0.2.5",), 60)


def test_address_answer_without_usable_records_is_marked_unusable() -> None:
    reply = reply_to(A_QUERY, "test. 60 IN DNAME d.test.")
    assert wire.parse_reply(A_QUERY, reply.to_wire()) == wire.Answer(0, (), 60, unusable=True)


def test_records_helper_builds_dnsmasq_arguments(tmp_path: Path) -> None:
    from tests.servers.dns import dnsmasq_args

    args = dnsmasq_args(5353, RECORDS, tmp_path / "hosts", tmp_path / "log")
    assert "--ptr-record=6.2.0.192.in-addr.arpa,other.test" in args
    assert "--host-record=mail.test,192.0.2.5,2001:db8::5" in args


class ScriptedServer:
    """A UDP server on the test's own loop, replying from a table: for what dnsmasq won't do."""

    def __init__(self, loop: Loop, table: dict[tuple[str, str], list[str]]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.table = table
        self.loop = loop
        loop.selector.register(self.sock, selectors.EVENT_READ, self._on_query)

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.loop.selector.unregister(self.sock)
        self.sock.close()

    def _on_query(self, _mask: int) -> None:
        wire, peer = self.sock.recvfrom(4096)
        query = dns.message.from_wire(wire)
        question = query.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        reply = dns.message.make_response(query)
        for text in self.table.get(key, []):
            name, ttl, rdclass, rdtype, data = text.split(" ", 4)
            reply.answer.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, data))
        self.sock.sendto(reply.to_wire(), peer)


def test_asks_again_for_a_cname_the_server_left_unresolved(loop: Loop) -> None:
    fake = ScriptedServer(
        loop,
        {
            ("5.2.0.192.in-addr.arpa.", "PTR"): ["5.2.0.192.in-addr.arpa. 60 IN PTR alias.test."],
            ("alias.test.", "A"): ["alias.test. 60 IN CNAME real.test."],
            ("alias.test.", "AAAA"): ["alias.test. 60 IN CNAME real.test."],
            ("real.test.", "A"): ["real.test. 60 IN A 192.0.2.5"],
        },
    )
    try:
        assert resolve(make(loop, fake.server), "192.0.2.5") == ("alias.test", None)
    finally:
        fake.close()
