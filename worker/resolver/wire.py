"""DNS messages for the worker's resolver: dnspython encodes and decodes, nothing else.

dnspython is used only for the wire format (``dns.message.make_query`` / ``from_wire``,
``dns.reversename``); sockets, timers and retries belong to ``resolver.client`` on the
worker's own loop. Answers are boiled down to what nginx's resolver keeps: the response code,
the values of the queried type (PTR targets, or A/AAAA addresses as text), the smallest TTL,
and the end of a CNAME chain the server did not resolve for us.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdtypes.ANY.PTR import PTR as PtrRecord
from dns.rdtypes.IN.A import A as ARecord
from dns.rdtypes.IN.AAAA import AAAA as AaaaRecord

PTR = dns.rdatatype.PTR
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
RdataType = dns.rdatatype.RdataType

# Enough for any PTR or A/AAAA answer, and the size RFC 9715 / DNS flag day 2020 recommend: a
# server never has to truncate what we ask for, so TCP fallback is not needed (see resolver.py).
EDNS_PAYLOAD = 1232

NXDOMAIN = int(dns.rcode.NXDOMAIN)
SERVFAIL = int(dns.rcode.SERVFAIL)

# The CVE-2026-28753 rule (nginx 1.29.7): a host name that goes into Client-Host and XCLIENT
# NAME= may hold letters, digits, dots and hyphens only, so a hostile PTR record cannot inject
# CRLF or spaces into the auth_http request or the backend's SMTP command line.
_HOST_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


@dataclass(frozen=True, slots=True)
class Query:
    """One question on the wire; ``message`` checks that a reply answers it."""

    qname: dns.name.Name
    rdtype: RdataType
    message: dns.message.QueryMessage

    @property
    def wire(self) -> bytes:
        return self.message.to_wire()


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply boiled down: ``rcode`` 0 with no ``values`` and no ``cname`` is NODATA."""

    rcode: int
    values: tuple[str, ...] = ()
    ttl: int = 0
    cname: dns.name.Name | None = None  # unresolved CNAME target: ask again for this name


def make_query(qname: dns.name.Name, rdtype: RdataType) -> Query:
    """A recursive query with a random ID (dnspython draws it from ``secrets``)."""
    message = dns.message.make_query(qname, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
    return Query(qname, rdtype, message)


def reverse_name(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dns.name.Name:
    """``5.2.0.192.in-addr.arpa.`` or the nibble form under ``ip6.arpa.``."""
    return dns.reversename.from_address(str(address))


def host_name(text: str) -> dns.name.Name | None:
    """The name to look up for a PTR target, or None if it breaks the CVE-2026-28753 rule.

    Beyond the character set, the name must also be a well-formed DNS name (no empty label,
    labels of at most 63 bytes), or it could not be asked for.
    """
    raw = text.encode("ascii", "replace")
    if not raw or not _HOST_BYTES.issuperset(raw):
        return None
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException:
        return None


def parse_reply(query: Query, wire: bytes) -> Answer | None:
    """The answer in ``wire``, or None when it is not a reply to ``query`` (ignore it).

    Like nginx, a datagram that does not parse or does not match the query's ID and question
    is dropped, and the query keeps waiting for the genuine reply or its timeout.
    """
    try:
        reply = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return _truncated_failure(query, wire)
    if not query.message.is_response(reply):
        return None
    rcode = int(reply.rcode())
    if rcode:
        return Answer(rcode)
    answer = _follow_chain(reply, query.qname, query.rdtype)
    if not answer.values and reply.flags & dns.flags.TC:
        # A truncated reply without the records: we do not retry over TCP (see EDNS_PAYLOAD).
        return Answer(SERVFAIL)
    return answer


def _truncated_failure(query: Query, wire: bytes) -> Answer | None:
    """A TC reply cut short in the middle of a record still ends the query, as a failure."""
    if len(wire) < 4 or wire[:2] != query.message.id.to_bytes(2, "big"):
        return None
    qr_and_tc = 0x80 | 0x02  # bits of the third header byte
    return Answer(SERVFAIL) if wire[2] & qr_and_tc == qr_and_tc else None


def _follow_chain(reply: dns.message.Message, qname: dns.name.Name, rdtype: RdataType) -> Answer:
    """Walk CNAMEs from ``qname`` inside the answer section, as nginx does before re-asking."""
    name = qname
    ttls: list[int] = []
    for _ in range(len(reply.answer) + 1):
        found = _rrset(reply, name, rdtype)
        if found is not None:
            values = tuple(_value(rdata) for rdata in found)
            return Answer(0, values, min([*ttls, found.ttl]))
        cname = _rrset(reply, name, dns.rdatatype.CNAME)
        if cname is None:
            break
        ttls.append(cname.ttl)
        name = cname[0].target
    if name == qname:
        return Answer(0)
    return Answer(0, (), min(ttls), cname=name)


def _rrset(
    reply: dns.message.Message, name: dns.name.Name, rdtype: RdataType
) -> dns.rrset.RRset | None:
    for rrset in reply.answer:
        if rrset.name == name and rrset.rdtype == rdtype and len(rrset):
            return rrset
    return None


def _value(rdata: object) -> str:
    if isinstance(rdata, PtrRecord):
        # The raw labels, not dnspython's escaped text: the name is checked byte by byte
        # later, and an escaped "\013" would slip a CR past that check in disguise.
        return b".".join(rdata.target.relativize(dns.name.root).labels).decode("latin-1")
    if isinstance(rdata, ARecord | AaaaRecord):
        return str(rdata.address)
    raise TypeError(f"unexpected record {rdata!r}")
