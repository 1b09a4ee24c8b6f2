"""The SMTP client name for every odd answer a DNS server can give: as nginx settles it.

Each case is one ``server`` (on its own loopback address, 127.0.0.2 and up) whose ``resolver``
is a crafted server (``CraftedDns``) that gives one exact answer: a DNAME alone, a zero-length
record, a wrong ID, FORMERR... The client connects from 127.0.0.1, so the lookup is the PTR
of ``1.0.0.127.in-addr.arpa`` and then the A/AAAA of the name found; the name the gateway
settled on (or ``[UNAVAILABLE]`` / ``[TEMPUNAVAIL]``) is the ``Client-Host`` the auth server
receives, and the error log says why.

nginx's rules (``ngx_resolver.c``), which mailgate follows:

* A reply nginx does not accept is dropped and the query waits on, for a resend or the
  timeout: a wrong ID, no QR bit, AD/CD/Z bits, FORMERR or an rcode above REFUSED, a record of
  a class other than IN, a short reply, an A record in an AAAA answer (or the reverse), and a
  PTR answer without any PTR record (a DNAME, a CNAME, a TXT alone).
* An empty answer is "Host not found" (for a PTR query even when truncated).
* The first PTR record in the answer is the name, whatever its owner, in lower case.
* A and AAAA are both awaited; an error on either is the result (the later one if both
  failed), else every address; without any, the last answer decides: a CNAME alone is
  followed (both types asked again), an empty one is "Host not found", and one with records
  but none usable leaves the lookup to time out.

AAAA replies come ``LATER`` than A replies, so both gateways see them in the same order.
Every test runs on nginx and on mailgate.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pytest

from tests.conftest import Gateway
from tests.servers.auth_http import AuthServer
from tests.servers.dns import (
    CLASS_CH,
    FLAG_AD,
    FLAG_TC,
    FLAGS_QR_RD_RA,
    TO_QUESTION,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_DNAME,
    TYPE_PTR,
    TYPE_TXT,
    CraftedDns,
    DnsQuery,
    Replies,
    Script,
    record,
    wire_name,
)

pytestmark = pytest.mark.slow

HOST = "mail.client.test"  # the PTR name of 127.0.0.1, whose A record is 127.0.0.1
DELEGATED = "1.0-25.0.0.127.in-addr.arpa"  # an RFC 2317 CNAME target for 127.0.0.1's PTR
REAL = "real.client.test"  # a CNAME target for HOST
LOOPBACK_A = bytes([127, 0, 0, 1])
LATER = 0.1  # seconds between a reply to A and the reply to AAAA
RESOLVER_TIMEOUT = 1
PTR_TIMED_OUT = "127.0.0.1 could not be resolved (110: Operation timed out)"
NAME_TIMED_OUT = f'"{HOST}" could not be resolved (110: Operation timed out)'
UNAVAILABLE = "[UNAVAILABLE]"
TEMPUNAVAIL = "[TEMPUNAVAIL]"
NXDOMAIN, SERVFAIL, NOTIMP, REFUSED, FORMERR, NOTAUTH = 3, 2, 4, 5, 1, 9


def ptr(target: str = HOST, owner: bytes = TO_QUESTION, **kwargs: int) -> bytes:
    return record(owner, TYPE_PTR, wire_name(target), **kwargs)


def address(owner: bytes = TO_QUESTION, rtype: int = TYPE_A, rdata: bytes = LOOPBACK_A) -> bytes:
    return record(owner, rtype, rdata)


def at_once(*datagrams: bytes) -> Replies:
    return [(0.0, datagram) for datagram in datagrams]


Answer = Callable[[DnsQuery], Replies]


def confirming(query: DnsQuery) -> Replies:
    """The forward step as it should go: the name's A record is the client, no AAAA."""
    if query.rtype == TYPE_A:
        return at_once(query.reply(address()))
    return [(LATER, query.reply())]


def on_ptr(answer: Answer) -> Script:
    """``answer`` for the PTR query, then a forward step that confirms whatever name came."""
    return lambda query: answer(query) if query.rtype == TYPE_PTR else confirming(query)


def on_forward(a: Answer, aaaa: Answer) -> Script:
    """The PTR query finds ``HOST``; ``a`` and ``aaaa`` answer the forward queries."""

    def script(query: DnsQuery) -> Replies:
        if query.rtype == TYPE_PTR:
            return at_once(query.reply(ptr()))
        if query.rtype == TYPE_A:
            return a(query)
        return [(LATER + delay, datagram) for delay, datagram in aaaa(query)]

    return script


def silent(query: DnsQuery) -> Replies:
    return []


def nodata(query: DnsQuery) -> Replies:
    return at_once(query.reply())


def rcode(code: int) -> Answer:
    return lambda query: at_once(query.reply(rcode=code))


def answer(*records: bytes) -> Answer:
    return lambda query: at_once(query.reply(*records))


def ptr_or_cname(query: DnsQuery) -> Replies:
    """RFC 2317 style: the PTR name is a CNAME, and its target has the PTR record."""
    if query.name == "1.0.0.127.in-addr.arpa":
        return at_once(query.reply(record(TO_QUESTION, TYPE_CNAME, wire_name(DELEGATED))))
    return at_once(query.reply(ptr()))


def cname_then_a(query: DnsQuery) -> Replies:
    """The name is a CNAME to real.client.test, asked for separately: 127.0.0.1, no AAAA."""
    if query.name == HOST:
        return at_once(query.reply(record(TO_QUESTION, TYPE_CNAME, wire_name(REAL))))
    return at_once(query.reply(address()) if query.rtype == TYPE_A else query.reply())


def nodata_then_a(query: DnsQuery) -> Replies:
    """NODATA for the name itself; real.client.test answered as ``cname_then_a`` does."""
    return nodata(query) if query.name == HOST else cname_then_a(query)


CNAME_TO_ITSELF = answer(record(TO_QUESTION, TYPE_CNAME, wire_name(HOST)))


@dataclass(frozen=True)
class Case:
    """One crafted server, and the Client-Host and error-log line nginx gives for it."""

    name: str
    script: Script
    host: str
    log: str | None = None


def ptr_log(code: int, text: str) -> str:
    return f"127.0.0.1 could not be resolved ({code}: {text})"


def name_log(code: int, text: str) -> str:
    return f'"{HOST}" could not be resolved ({code}: {text})'


CASES = [
    # --- the PTR step ---
    Case("ptr", on_ptr(answer(ptr())), HOST),
    Case("ptr_uncompressed", on_ptr(answer(ptr(owner=wire_name("1.0.0.127.in-addr.arpa")))), HOST),
    Case(
        "ptr_dname_only",
        on_ptr(answer(record(TO_QUESTION, TYPE_DNAME, wire_name("x.test")))),
        TEMPUNAVAIL,
        PTR_TIMED_OUT,
    ),
    Case(
        "ptr_txt_only",
        on_ptr(answer(record(TO_QUESTION, TYPE_TXT, b"\x03abc"))),
        TEMPUNAVAIL,
        PTR_TIMED_OUT,
    ),
    Case("ptr_cname_only", on_ptr(ptr_or_cname), TEMPUNAVAIL, PTR_TIMED_OUT),
    Case(
        "ptr_cname_and_ptr",
        on_ptr(
            answer(
                record(TO_QUESTION, TYPE_CNAME, wire_name(DELEGATED)),
                ptr(owner=wire_name(DELEGATED)),
            )
        ),
        HOST,
    ),
    Case(
        "ptr_dname_cname_ptr",
        on_ptr(
            answer(
                record(wire_name("0.0.127.in-addr.arpa"), TYPE_DNAME, wire_name("d.test")),
                record(TO_QUESTION, TYPE_CNAME, wire_name("1.d.test")),
                ptr(owner=wire_name("1.d.test")),
            )
        ),
        HOST,
    ),
    Case("ptr_other_owner", on_ptr(answer(ptr(owner=wire_name("elsewhere.test")))), HOST),
    Case("ptr_mixed_case", on_ptr(answer(ptr("Mail.Client.TEST"))), HOST),
    Case("ptr_two_records", on_ptr(answer(ptr(), ptr("other.client.test"))), HOST),
    Case(
        "ptr_zero_length",
        on_ptr(answer(record(TO_QUESTION, TYPE_PTR, b""))),
        TEMPUNAVAIL,
        PTR_TIMED_OUT,
    ),
    Case("ptr_class_chaos", on_ptr(answer(ptr(rclass=CLASS_CH))), TEMPUNAVAIL, PTR_TIMED_OUT),
    Case("ptr_then_class_chaos", on_ptr(answer(ptr(), ptr("x.test", rclass=CLASS_CH))), HOST),
    Case("ptr_nodata", on_ptr(nodata), UNAVAILABLE, ptr_log(3, "Host not found")),
    Case("ptr_nxdomain", on_ptr(rcode(NXDOMAIN)), UNAVAILABLE, ptr_log(3, "Host not found")),
    Case("ptr_servfail", on_ptr(rcode(SERVFAIL)), TEMPUNAVAIL, ptr_log(2, "Server failure")),
    Case("ptr_notimp", on_ptr(rcode(NOTIMP)), TEMPUNAVAIL, ptr_log(4, "Unimplemented")),
    Case("ptr_refused", on_ptr(rcode(REFUSED)), TEMPUNAVAIL, ptr_log(5, "Operation refused")),
    Case("ptr_formerr", on_ptr(rcode(FORMERR)), TEMPUNAVAIL, PTR_TIMED_OUT),
    Case("ptr_notauth", on_ptr(rcode(NOTAUTH)), TEMPUNAVAIL, PTR_TIMED_OUT),
    Case("ptr_silent", on_ptr(silent), TEMPUNAVAIL, PTR_TIMED_OUT),
    Case(
        "ptr_wrong_id",
        on_ptr(lambda q: at_once(q.reply(ptr(), ident=q.ident ^ 0x5555))),
        TEMPUNAVAIL,
        PTR_TIMED_OUT,
    ),
    Case(
        "ptr_wrong_id_then_genuine",
        on_ptr(
            lambda q: [
                (0.0, q.reply(ptr("spoof.client.test"), ident=q.ident ^ 0x5555)),
                (0.05, q.reply(ptr())),
            ]
        ),
        HOST,
    ),
    Case(
        "ptr_truncated_empty",
        on_ptr(lambda q: at_once(q.reply(flags=FLAGS_QR_RD_RA | FLAG_TC))),
        UNAVAILABLE,
        ptr_log(3, "Host not found"),
    ),
    Case(
        "ptr_truncated_mid_record",
        on_ptr(lambda q: at_once(q.reply(ptr()[:-3], flags=FLAGS_QR_RD_RA | FLAG_TC))),
        TEMPUNAVAIL,
        PTR_TIMED_OUT,
    ),
    Case(
        "ptr_ad_flag",
        on_ptr(lambda q: at_once(q.reply(ptr(), flags=FLAGS_QR_RD_RA | FLAG_AD))),
        TEMPUNAVAIL,
        PTR_TIMED_OUT,
    ),
    Case(
        "ptr_not_a_response",
        on_ptr(lambda q: at_once(q.reply(ptr(), flags=0x0180))),
        TEMPUNAVAIL,
        PTR_TIMED_OUT,
    ),
    # --- the forward (A/AAAA) step ---
    Case(
        "a_cname_and_a",
        on_forward(
            answer(record(TO_QUESTION, TYPE_CNAME, wire_name(REAL)), address(wire_name(REAL))),
            nodata,
        ),
        HOST,
    ),
    Case("a_cname_only", on_forward(cname_then_a, cname_then_a), HOST),
    Case("a_other_owner", on_forward(answer(address(wire_name("elsewhere.test"))), nodata), HOST),
    Case(
        "a_wrong_address",
        on_forward(answer(address(rdata=bytes([127, 0, 0, 2]))), nodata),
        UNAVAILABLE,
    ),
    Case(
        "a_dname_only",
        on_forward(answer(record(TO_QUESTION, TYPE_DNAME, wire_name("x.test"))), nodata),
        UNAVAILABLE,
        name_log(3, "Host not found"),
    ),
    Case(
        "aaaa_dname_only_last",
        on_forward(nodata, answer(record(TO_QUESTION, TYPE_DNAME, wire_name("x.test")))),
        TEMPUNAVAIL,
        NAME_TIMED_OUT,
    ),
    Case(
        "a_with_an_aaaa_record",
        on_forward(answer(address(rtype=TYPE_AAAA, rdata=bytes(15) + b"\1")), nodata),
        TEMPUNAVAIL,
        NAME_TIMED_OUT,
    ),
    Case(
        "a_zero_length", on_forward(answer(address(rdata=b"")), nodata), TEMPUNAVAIL, NAME_TIMED_OUT
    ),
    Case(
        "a_class_chaos",
        on_forward(answer(record(TO_QUESTION, TYPE_A, LOOPBACK_A, rclass=CLASS_CH)), nodata),
        TEMPUNAVAIL,
        NAME_TIMED_OUT,
    ),
    Case(
        "a_servfail",
        on_forward(rcode(SERVFAIL), nodata),
        TEMPUNAVAIL,
        name_log(2, "Server failure"),
    ),
    Case(
        "a_nxdomain_aaaa_silent", on_forward(rcode(NXDOMAIN), silent), TEMPUNAVAIL, NAME_TIMED_OUT
    ),
    Case(
        "a_nxdomain_aaaa_servfail",
        on_forward(rcode(NXDOMAIN), rcode(SERVFAIL)),
        TEMPUNAVAIL,
        name_log(2, "Server failure"),
    ),
    Case(
        "a_cname_and_a_aaaa_cname_only",
        on_forward(
            answer(record(TO_QUESTION, TYPE_CNAME, wire_name(REAL)), address(wire_name(REAL))),
            answer(record(TO_QUESTION, TYPE_CNAME, wire_name(REAL))),
        ),
        HOST,
    ),
    Case(
        "a_cname_only_aaaa_nodata",
        on_forward(cname_then_a, nodata),
        UNAVAILABLE,
        name_log(3, "Host not found"),
    ),
    Case(
        "a_nodata_aaaa_cname_only",
        on_forward(nodata_then_a, cname_then_a),
        HOST,
    ),
    Case(
        "a_cname_loop",
        on_forward(CNAME_TO_ITSELF, CNAME_TO_ITSELF),
        UNAVAILABLE,
        name_log(3, "Host not found"),
    ),
    Case("a_formerr", on_forward(rcode(FORMERR), nodata), TEMPUNAVAIL, NAME_TIMED_OUT),
    Case(
        "a_wrong_id",
        on_forward(lambda q: at_once(q.reply(address(), ident=q.ident ^ 0x5555)), nodata),
        TEMPUNAVAIL,
        NAME_TIMED_OUT,
    ),
]


def listen_address(case: Case) -> str:
    """Each case's server listens on its own loopback address, all on one port; the client
    still connects from 127.0.0.1, so every lookup is the PTR of 127.0.0.1."""
    return f"127.0.0.{CASES.index(case) + 2}"


# The "probe" server only tells when the gateway is up (the fixture probes 127.0.0.1 ports).
GATEWAY_CONFIG = (
    "mail {\n    auth_http %%AUTH_HTTP%%;\n    server_name localhost;\n"
    "    server { listen 127.0.0.1:%%PORT_probe%%; protocol smtp; }\n"
    + "".join(
        f"    server {{ listen {listen_address(case)}:%%PORT_cases%%; protocol smtp; "
        f"resolver %%DNS_{case.name}%%; resolver_timeout {RESOLVER_TIMEOUT}s; }}\n"
        for case in CASES
    )
    + "}\n"
)


@pytest.fixture(scope="module")
def gateway_values() -> Iterator[Mapping[str, str | int]]:
    dns = CraftedDns()
    servers = {f"DNS_{case.name}": dns.add(case.script) for case in CASES}
    with dns:
        yield servers


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_client_name_is_the_one_nginx_settles_on(
    gateway: Gateway, auth_server: AuthServer, case: Case
) -> None:
    logged = len(gateway.log_text())
    server = (listen_address(case), gateway.port("cases"))
    with smtplib.SMTP(*server, local_hostname="client.test", timeout=5) as smtp:
        smtp.login("carol", "carol-pw")
    (request,) = auth_server.wait_for_requests(1)
    assert request["Client-Host"] == case.host
    lines = gateway.log_text()[logged:].splitlines()
    resolved = [line for line in lines if "could not be resolved" in line]
    if case.log is None:
        assert resolved == []
    else:
        assert resolved and all(case.log in line for line in resolved), lines
