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
import dns.rdataclass
import dns.rdatatype
import dns.reversename
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
    # Records in the answer, but none of the asked type nor a CNAME (a DNAME alone, say): as
    # nginx, such an A/AAAA answer gives no result when it is the last of its step to arrive.
    unusable: bool = False


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
    """The answer in ``wire``, or None when nginx would drop it (the query then waits on).

    nginx (``ngx_resolver_process_response``, ``_process_ptr``, ``_process_a``) drops a reply
    that does not parse or match the query's ID and question, that is not a plain response
    (flags other than QR among QR/opcode/Z/AD/CD), whose rcode is FORMERR or above REFUSED,
    or whose answer holds a record of a class other than IN; so does a PTR answer without a
    PTR record (a DNAME or a CNAME alone), and an A answer with an AAAA record or the reverse.
    The query keeps waiting for a resend's reply or its timeout.
    """
    try:
        reply = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return _truncated_failure(query, wire)
    if not query.message.is_response(reply) or reply.flags & _CHECKED_FLAGS != dns.flags.QR:
        return None
    rcode = reply.flags & _RCODE_BITS  # nginx reads the header's 4 bits, not EDNS's
    if rcode == dns.rcode.FORMERR or rcode > dns.rcode.REFUSED:
        return None
    if rcode:
        return Answer(rcode)
    if query.rdtype == PTR:
        return _ptr_answer(reply)
    if any(rrset.rdclass != dns.rdataclass.IN for rrset in reply.answer):
        return None
    return _address_answer(reply, query.rdtype)


# Flag bits nginx checks: QR must be set, the opcode (QUERY) and Z, AD and CD must be 0.
_CHECKED_FLAGS = 0xF870
_RCODE_BITS = 0x000F


def _ptr_answer(reply: dns.message.Message) -> Answer | None:
    """The first PTR record, whatever its owner (a CNAME's target, say); an empty answer is
    NXDOMAIN even when truncated (nginx does not retry a PTR query over TCP)."""
    if not reply.answer:
        return Answer(NXDOMAIN)
    for rrset in reply.answer:  # in order: nginx stops at the first PTR, or at a non-IN class
        if rrset.rdclass != dns.rdataclass.IN:
            return None
        if rrset.rdtype == PTR:
            return Answer(0, (_value(rrset[0]),), rrset.ttl)
    return None


def _address_answer(reply: dns.message.Message, rdtype: RdataType) -> Answer | None:
    """Every record of the asked type, whatever its owner; else the last CNAME's target."""
    other = AAAA if rdtype == A else A
    if any(rrset.rdtype == other for rrset in reply.answer):
        return None
    values = tuple(
        _value(rdata) for rrset in reply.answer if rrset.rdtype == rdtype for rdata in rrset
    )
    ttl = min((rrset.ttl for rrset in reply.answer), default=0)
    if values:
        return Answer(0, values, ttl)
    if reply.flags & dns.flags.TC:
        # A truncated reply without the records: we do not retry over TCP (see EDNS_PAYLOAD).
        return Answer(SERVFAIL)
    cnames = [rrset[0].target for rrset in reply.answer if rrset.rdtype == dns.rdatatype.CNAME]
    if cnames:
        return Answer(0, (), ttl, cname=cnames[-1])
    return Answer(0, (), ttl, unusable=bool(reply.answer))


def _truncated_failure(query: Query, wire: bytes) -> Answer | None:
    """A TC reply cut short in the middle of a record ends an A/AAAA query, as a failure
    (nginx would ask again over TCP); nginx drops such a PTR reply, as any short one."""
    if query.rdtype == PTR or len(wire) < 4 or wire[:2] != query.message.id.to_bytes(2, "big"):
        return None
    qr_and_tc = 0x80 | 0x02  # bits of the third header byte
    return Answer(SERVFAIL) if wire[2] & qr_and_tc == qr_and_tc else None


def _value(rdata: object) -> str:
    if isinstance(rdata, PtrRecord):
        # The raw labels, not dnspython's escaped text: the name is checked byte by byte
        # later, and an escaped "\013" would slip a CR past that check in disguise.
        # Lower-cased as nginx's ngx_resolver_copy does (ASCII letters only, as ngx_strlow).
        name = b".".join(rdata.target.relativize(dns.name.root).labels)
        return name.lower().decode("latin-1")
    if isinstance(rdata, ARecord | AaaaRecord):
        return str(rdata.address)
    raise TypeError(f"unexpected record {rdata!r}")
