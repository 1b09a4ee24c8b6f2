"""The SMTP client-name lookup of nginx's ``resolver`` directive, on the worker's loop.

nginx (``ngx_mail_smtp_handler.c``) resolves an SMTP client before the greeting: the PTR
name of the client address, then the A/AAAA records of that name, which must contain the client
address ("forward-confirmed"). The outcome is the ``Client-Host`` header to auth_http and the
XCLIENT ``NAME=`` to the backend::

    resolver off                                  -> [UNAVAILABLE]             (no lookup)
    client on a unix socket                       -> [TEMPUNAVAIL]             (no lookup)
    PTR: NXDOMAIN, or an empty answer             -> [UNAVAILABLE]  + log (1)
    PTR: SERVFAIL, NOTIMP, REFUSED                -> [TEMPUNAVAIL]  + log (1)
    PTR: timeout, or only replies nginx drops     -> [TEMPUNAVAIL]  + log (1)  110
         (no PTR record in the answer: a DNAME
         or CNAME alone; FORMERR; see parse_reply)
    PTR name outside [A-Za-z0-9.-]                -> [TEMPUNAVAIL]  + log (2)  nginx 1.29.7,
                                                                               CVE-2026-28753
    A/AAAA: NXDOMAIN (or no address at all)       -> [UNAVAILABLE]  + log (3)
    A/AAAA: timeout, SERVFAIL...                  -> [TEMPUNAVAIL]  + log (3)
    A/AAAA: last answer without A, AAAA or CNAME  -> [TEMPUNAVAIL]  + log (3)  110, at the
                                                                               timeout
    A/AAAA answered without the client address    -> [UNAVAILABLE]             (no log)
    A/AAAA contain the client address             -> the PTR name

    (1) "<client address> could not be resolved (<code>: <text>)"
        (``ngx_mail_smtp_resolve_addr_handler``)
    (2) "<client address> resolved to invalid host name"
    (3) "\\"<name>\\" could not be resolved (<code>: <text>)"
        (``ngx_mail_smtp_resolve_name_handler``)

All three log lines are at nginx's error level. ``<code>: <text>`` are nginx's resolver states
and ``ngx_resolver_strerror`` texts: the DNS rcode (1 Format error, 2 Server failure, 3 Host not
found, 4 Unimplemented, 5 Operation refused) or 110 Operation timed out.

How the lookups run, as nginx's ``ngx_resolver.c`` does unless noted:

* UDP to the configured servers; each query starts at the next server (round-robin) and is
  re-sent to the following one when no reply came within the resend interval (nginx: 5 s; here
  at most ``resolver_timeout / (servers + 1)`` so that every server gets a try). A server that
  refuses at once (ICMP port unreachable) is skipped without waiting. A query keeps one UDP
  socket per server it tried (a resend to the same server reuses it), so a reply that comes
  late still counts, and closes them all when its step ends: at most ``servers`` descriptors
  per pending query, whatever the number of resends.
* The PTR lookup and the forward lookup each get ``resolver_timeout`` (nginx gives each its own
  resolver context). A and AAAA are asked in parallel, as ``ipv4=``/``ipv6=`` allow, and both
  answers are awaited; an error on either is the result, NODATA on both is "Host not found"
  (3). The first PTR record of the answer is the name, lower-cased; A/AAAA records count
  whatever their owner name, as in nginx (``wire.parse_reply`` lists what it drops).
* A CNAME is followed as nginx does: when no A/AAAA answer had an address and the last one
  to arrive was a CNAME alone, every type is asked again for its target (at most
  ``MAX_CNAME_HOPS`` times, then "Host not found" as nginx past its 50). A PTR answer's CNAME
  is not followed (nginx waits for a PTR record that never comes), but a PTR record next to
  it is taken.
* No TCP fallback: queries offer an EDNS0 buffer of 1232 bytes, which any PTR or A/AAAA answer
  fits in; a truncated A/AAAA reply without the records counts as "Server failure" (2) (an
  empty PTR answer is "Host not found" (3), truncated or not, as nginx).
* Positive answers are cached per worker for their smallest TTL, or ``valid=`` when set; errors
  are not cached (nginx frees a failed node too).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import count

import dns.name

from mailgate.config.model import ServerConfig
from mailgate.worker.io.loop import Loop, Timer
from mailgate.worker.resolver import wire
from mailgate.worker.resolver.exchange import Exchange, Server
from mailgate.worker.resolver.wire import Answer, RdataType

UNAVAILABLE = "[UNAVAILABLE]"
TEMPUNAVAIL = "[TEMPUNAVAIL]"

TIMEDOUT = 110  # NGX_RESOLVE_TIMEDOUT is NGX_ETIMEDOUT, errno ETIMEDOUT on Linux
RESEND_INTERVAL = 5.0  # nginx's r->resend_timeout
MAX_CNAME_HOPS = 8
CACHE_SIZE = 4096

_ERRORS = {
    1: "Format error",
    2: "Server failure",
    3: "Host not found",
    4: "Unimplemented",
    5: "Operation refused",
    TIMEDOUT: "Operation timed out",
}

Cancel = Callable[[], None]
OnDone = Callable[[str, str | None], None]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
StepDone = Callable[[Answer], None]


def strerror(code: int) -> str:
    """``ngx_resolver_strerror``."""
    return _ERRORS.get(code, "Unknown error")


class _Cache:
    """Positive answers by key until they expire; the oldest go first when it is full."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._entries: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}

    def get(self, key: tuple[str, str]) -> tuple[str, ...] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: tuple[str, str], values: tuple[str, ...], ttl: float) -> None:
        if ttl <= 0:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self._size:
            self._evict()
        self._entries[key] = (time.monotonic() + ttl, values)

    def _evict(self) -> None:
        now = time.monotonic()
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= self._size:
            del self._entries[next(iter(self._entries))]


class Resolver:
    """One per worker and resolver configuration: servers, the answer cache, round-robin."""

    def __init__(
        self,
        loop: Loop,
        servers: Sequence[str],
        *,
        timeout: float = 30.0,
        valid: float | None = None,
        ipv4: bool = True,
        ipv6: bool = True,
    ) -> None:
        self.loop = loop
        self.servers = tuple(Server.parse(text) for text in servers)
        self.timeout = timeout
        self.valid = valid
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.cache = _Cache()
        self._rotation = count()

    @classmethod
    def from_config(cls, loop: Loop, config: ServerConfig) -> Resolver:
        return cls(
            loop,
            config.resolver,
            timeout=config.resolver_timeout,
            valid=config.resolver_valid,
            ipv4=config.resolver_ipv4,
            ipv6=config.resolver_ipv6,
        )

    def client_host(self, address: str, on_done: OnDone, timeout: float | None = None) -> Cancel:
        """Look up ``address`` (an IP, or ``unix:...``) and call ``on_done(host, log_line)``.

        ``host`` is the Client-Host / XCLIENT NAME value; ``log_line`` is None or a message for
        the error log. ``on_done`` is always called later from the loop, never from inside this
        call, even for a cached answer, so the caller can store the returned ``Cancel`` first.
        After ``Cancel()`` (the client went away) ``on_done`` is not called and no socket or
        timer of this lookup stays on the loop.
        """
        job = _ClientHost(self, address, on_done, self.timeout if timeout is None else timeout)
        return job.cancel

    def cache_ttl(self, ttl: int) -> float:
        """``valid=`` overrides the records' TTL, as nginx's ``r->valid``."""
        return self.valid if self.valid is not None else ttl

    def next_server(self) -> int:
        return next(self._rotation) % len(self.servers)


class _ClientHost:
    """PTR, then forward confirmation: one client's walk through the table above."""

    def __init__(self, resolver: Resolver, address: str, on_done: OnDone, timeout: float) -> None:
        self._resolver = resolver
        self._address = address
        # A unix-socket client has no address to look up; anything else must be an IP.
        self._client = None if address.startswith("unix:") else _client_ip(address)
        self._on_done: OnDone | None = on_done
        self._timeout = timeout
        self._step: _Step | None = None
        self._name = ""
        # Even the answers known at once go through the loop (see client_host).
        self._timer: Timer | None = resolver.loop.call_later(0, self._begin)

    def cancel(self) -> None:
        self._on_done = None
        self._stop()

    def _begin(self) -> None:
        self._timer = None
        if not self._resolver.servers:
            self._finish(UNAVAILABLE)
            return
        client = self._client
        if client is None:
            self._finish(TEMPUNAVAIL)
            return
        key = ("PTR", str(client))
        cached = self._resolver.cache.get(key)
        if cached is not None:
            self._on_ptr(Answer(0, cached), key=None)
            return
        ptr_name = wire.reverse_name(client)
        self._run(ptr_name, [wire.PTR], lambda answer: self._on_ptr(answer, key))

    def _on_ptr(self, answer: Answer, key: tuple[str, str] | None) -> None:
        if answer.rcode:
            reason = f"{self._address} could not be resolved ({_state(answer.rcode)})"
            self._finish(_failure(answer.rcode), reason)
            return
        if key is not None:
            self._resolver.cache.put(key, answer.values, self._resolver.cache_ttl(answer.ttl))
        self._name = answer.values[0]  # nginx takes the first PTR record
        qname = wire.host_name(self._name)
        if qname is None:
            self._finish(TEMPUNAVAIL, f"{self._address} resolved to invalid host name")
            return
        self._confirm(qname)

    def _confirm(self, qname: dns.name.Name) -> None:
        key = ("ADDR", self._name.lower())
        cached = self._resolver.cache.get(key)
        if cached is not None:
            self._on_addresses(Answer(0, cached), key=None)
            return
        types = [wire.A] if self._resolver.ipv4 else []
        types += [wire.AAAA] if self._resolver.ipv6 else []
        self._run(qname, types, lambda answer: self._on_addresses(answer, key))

    def _on_addresses(self, answer: Answer, key: tuple[str, str] | None) -> None:
        if answer.rcode:
            reason = f'"{self._name}" could not be resolved ({_state(answer.rcode)})'
            self._finish(_failure(answer.rcode), reason)
            return
        if key is not None:
            self._resolver.cache.put(key, answer.values, self._resolver.cache_ttl(answer.ttl))
        confirmed = any(_client_ip(value) == self._client for value in answer.values)
        self._finish(self._name if confirmed else UNAVAILABLE)

    def _run(self, qname: dns.name.Name, rdtypes: list[RdataType], then: StepDone) -> None:
        self._step = _Step(self._resolver, qname, rdtypes, self._timeout, then)

    def _finish(self, host: str, log: str | None = None) -> None:
        on_done, self._on_done = self._on_done, None
        self._stop()
        if on_done is not None:
            on_done(host, log)

    def _stop(self) -> None:
        if self._timer is not None:
            self._resolver.loop.cancel(self._timer)
            self._timer = None
        if self._step is not None:
            self._step.close()
            self._step = None


def _client_ip(text: str) -> IPAddress:
    """An IPv4-mapped IPv6 client is an IPv4 client, for the PTR name and the comparison."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _state(code: int) -> str:
    return f"{code}: {strerror(code)}"


def _failure(code: int) -> str:
    return UNAVAILABLE if code == wire.NXDOMAIN else TEMPUNAVAIL


class _Step:
    """One name asked for one or more types in parallel under one deadline: one nginx
    resolver context.

    Every type's answer is awaited; ``_settle`` makes the result of them, or none (then the
    step ends at its timeout). When it is a CNAME, every type is asked again for its target,
    under the same deadline, as ``ngx_resolver_process_a`` does.
    """

    def __init__(
        self,
        resolver: Resolver,
        qname: dns.name.Name,
        rdtypes: list[RdataType],
        timeout: float,
        on_done: StepDone,
    ) -> None:
        self._resolver = resolver
        self._rdtypes = rdtypes
        self._on_done: StepDone | None = on_done
        self._loop = resolver.loop
        self._timer: Timer | None = self._loop.call_later(timeout, self._timed_out)
        self._interval = min(RESEND_INTERVAL, timeout / (len(resolver.servers) + 1))
        self._cname_ttls: list[int] = []
        self._answers: list[Answer | None] = []
        self._arrived: list[Answer] = []
        self._exchanges: list[Exchange] = []
        self._ask(qname)

    def close(self) -> None:
        self._on_done = None
        if self._timer is not None:
            self._loop.cancel(self._timer)
            self._timer = None
        for exchange in self._exchanges:
            exchange.close()

    def _ask(self, qname: dns.name.Name) -> None:
        self._answers = [None] * len(self._rdtypes)
        self._arrived = []
        self._exchanges = [
            Exchange(
                self._resolver.loop,
                self._resolver.servers,
                self._resolver.next_server(),
                wire.make_query(qname, rdtype),
                interval=self._interval,
                on_answer=self._collector(index),
            )
            for index, rdtype in enumerate(self._rdtypes)
        ]

    def _collector(self, index: int) -> StepDone:
        def collect(answer: Answer) -> None:
            self._answers[index] = answer
            self._arrived.append(answer)
            if all(a is not None for a in self._answers):
                self._settled(_settle(self._arrived))

        return collect

    def _settled(self, result: Answer | None) -> None:
        if result is None:
            return
        if result.cname is None:
            self._finish(replace(result, ttl=min([*self._cname_ttls, result.ttl])))
        elif len(self._cname_ttls) >= MAX_CNAME_HOPS:
            self._finish(Answer(wire.NXDOMAIN))  # nginx, past NGX_RESOLVER_MAX_RECURSION
        else:
            self._cname_ttls.append(result.ttl)
            self._ask(result.cname)

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(Answer(TIMEDOUT))

    def _finish(self, answer: Answer) -> None:
        on_done = self._on_done
        self.close()
        if on_done is not None:
            on_done(answer)


def _settle(arrived: list[Answer]) -> Answer | None:
    """The step's result once every type has its answer, as ``ngx_resolver_process_a``
    settles A and AAAA: the later error if any failed, else every address; else it is the
    last answer that counts: its CNAME to follow, NXDOMAIN if it was empty, or None (wait for
    the timeout) if it held only unusable records."""
    errors = [answer for answer in arrived if answer.rcode]
    if errors:
        return errors[-1]
    values = tuple(value for answer in arrived for value in answer.values)
    if values:
        return Answer(0, values, min(answer.ttl for answer in arrived if answer.values))
    last = arrived[-1]
    if last.unusable:
        return None
    if last.cname is not None:
        return last
    return Answer(wire.NXDOMAIN)
