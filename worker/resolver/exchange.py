"""One DNS query on the worker's loop: the UDP sockets, resends and failover between servers.

The resolver (``resolver.client``) decides what to ask and what the answers mean; an exchange
only gets one query answered by one of the configured servers, or is closed by its step.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailgate.worker.io.loop import Loop, Timer
from mailgate.worker.resolver import wire
from mailgate.worker.resolver.wire import Answer, Query

OnAnswer = Callable[[Answer], None]
_RECV_SIZE = 65535


@dataclass(frozen=True, slots=True)
class Server:
    """A DNS server as ``ServerConfig.resolver`` names it: ``127.0.0.1:53``, ``[::1]:53``."""

    family: socket.AddressFamily
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Server:
        host, port = text, 53
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                port = int(rest.removeprefix(":"))
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = int(port_text)
        address = ipaddress.ip_address(host)
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        return cls(family, str(address), port)


class Exchange:
    """One query sent until a reply matches: failover, retransmission, late replies.

    Each server gets one connected UDP socket for the whole query (a fresh random source port,
    and the kernel drops datagrams from any other address); a resend to the same server goes
    out on it again, so a slow server's reply to an earlier send still ends the query. A query
    thus holds at most one descriptor per server, and ``close`` (the end of its step) frees them.
    """

    def __init__(
        self,
        loop: Loop,
        servers: Sequence[Server],
        first: int,
        query: Query,
        *,
        interval: float,
        on_answer: OnAnswer,
    ) -> None:
        self._loop = loop
        self._servers = servers
        self._first = first
        self._query = query
        self._wire = query.wire
        self._interval = interval
        self._on_answer: OnAnswer | None = on_answer
        self._sockets: dict[int, socket.socket] = {}  # by index in ``resolver.servers``
        self._tries = 0
        self._timer: Timer | None = None
        self._attempt()

    def close(self) -> None:
        self._on_answer = None
        if self._timer is not None:
            self._loop.cancel(self._timer)
            self._timer = None
        for index in list(self._sockets):
            self._drop(index)

    def _attempt(self) -> None:
        index = (self._first + self._tries) % len(self._servers)
        self._tries += 1
        self._timer = self._loop.call_later(self._interval, self._attempt)
        sock = self._sockets.get(index)
        if sock is None:
            try:
                sock = _connected_socket(self._servers[index])
            except OSError:  # no route, no file descriptor left...
                self._fail_over()
                return
            self._sockets[index] = sock
            self._loop.selector.register(
                sock, selectors.EVENT_READ, lambda _mask: self._on_readable(index)
            )
        try:
            sock.send(self._wire)
        except OSError:
            self._drop(index)
            self._fail_over()

    def _fail_over(self) -> None:
        """Try the next server now, but only in the first round: a list of servers that are
        all down then waits for the resend timer instead of spinning."""
        if self._tries < len(self._servers) and self._on_answer is not None:
            if self._timer is not None:
                self._loop.cancel(self._timer)
            self._attempt()

    def _on_readable(self, index: int) -> None:
        sock = self._sockets.get(index)
        if sock is None:  # closed by an earlier callback of the same loop turn
            return
        while self._on_answer is not None:
            try:
                datagram = sock.recv(_RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:  # ICMP port unreachable, reported on the connected socket
                self._drop(index)
                self._fail_over()
                return
            answer = wire.parse_reply(self._query, datagram)
            if answer is not None:
                on_answer = self._on_answer
                self.close()
                on_answer(answer)

    def _drop(self, index: int) -> None:
        sock = self._sockets.pop(index)
        self._loop.selector.unregister(sock)
        sock.close()


def _connected_socket(server: Server) -> socket.socket:
    sock = socket.socket(server.family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((server.host, server.port))  # UDP: no handshake, it never blocks
    except OSError:
        sock.close()
        raise
    return sock
