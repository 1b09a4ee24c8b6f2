"""Reading a PROXY header off an accepted socket, and ``set_real_ip_from`` trust.

nginx peeks at the header and consumes exactly its bytes, so what follows (a TLS ClientHello,
a command) stays in the socket for the session. :class:`HeaderReader` does the same, one
readiness event at a time; :class:`HeaderWatch` runs it on the loop until it has an outcome.
The caller owns the deadline.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from mailgate.config.model import IPNetwork
from mailgate.worker.proxy_protocol import codec
from mailgate.worker.sansio import NEED_DATA, NeedData, log_text

# A proxy sends its header with the connection: a client still sending one after this long is
# not a proxy that nginx's ``timeout`` (60 s by default) should wait for.
HEADER_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Failed:
    """No header: it was ``broken`` (nginx refuses it; ``log_message`` at error level, None
    where nginx logs nothing), or the client left or its socket failed first (``log_message``
    at info level)."""

    log_message: str | None
    broken: bool


ReadResult = NeedData | Failed | codec.ProxyHeader


class HeaderReader:
    """The PROXY header of one connection, read as it arrives."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seen = bytearray()  # the part of the header consumed so far

    def read(self) -> ReadResult:
        """Read the header without reading past it: peek, and consume what was peeked.

        While the header is incomplete every byte seen so far belongs to it (a v1 header ends
        at its first LF, a v2 header at the length it announced), so those bytes are taken
        out of the socket into a capped buffer: the socket then stays quiet until more
        arrive, instead of readable with bytes that cannot be parsed yet. Once complete,
        exactly the rest of the header is consumed; what follows is the client's.
        """
        room = codec.MAX_HEADER - len(self._seen)
        try:
            data = self.sock.recv(room, socket.MSG_PEEK)
        except BlockingIOError:
            return NEED_DATA
        except OSError as err:
            return Failed(f"recv() failed ({err.errno}: {err.strerror})", broken=False)
        if not data:
            return Failed("client closed connection", broken=False)
        result = codec.parse_proxy_header(bytes(self._seen) + data)
        if result is NEED_DATA:
            # Bounded: the parser refuses a v1 line past 107 bytes and a v2 header past
            # MAX_HEADER, so an incomplete header is always shorter than that.
            self.sock.recv(len(data))
            self._seen += data
            return NEED_DATA
        if isinstance(result, codec.BrokenHeader):
            return Failed(result.log_message, broken=True)
        self.sock.recv(result.length - len(self._seen))  # exactly the rest of the header
        self._seen = bytearray()
        return result


class Selector(Protocol):
    """The part of the worker's poller a watch uses."""

    def register(self, sock: socket.socket, mask: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(mask)`` when ``sock`` is ready."""

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching ``sock``."""


class HeaderWatch:
    """Reads the header as its bytes arrive, then reports once: ``on_done`` gets the header
    or :class:`Failed`. :meth:`stop` before that (the session closes) reports nothing."""

    def __init__(
        self,
        selector: Selector,
        sock: socket.socket,
        on_done: Callable[[codec.ProxyHeader | Failed], None],
    ) -> None:
        self._selector = selector
        self._reader = HeaderReader(sock)
        self._on_done: Callable[[codec.ProxyHeader | Failed], None] | None = on_done
        selector.register(sock, 1, self._ready)  # 1: EVENT_READ

    def stop(self) -> None:
        if self._on_done is not None:
            self._on_done = None
            self._selector.unregister(self._reader.sock)

    def _ready(self, _mask: int) -> None:
        result = self._reader.read()
        on_done = self._on_done
        if result is NEED_DATA or on_done is None:
            return
        self.stop()
        on_done(result)


def trusted(peer: str, set_real_ip_from: Collection[IPNetwork | str]) -> bool:
    """``set_real_ip_from``: whether the peer at ``peer`` (an address as ``accept()`` gave
    it, or ``"unix:"``) may replace the client address with a PROXY header's."""
    if peer == "unix:":
        return "unix:" in set_real_ip_from
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; nginx matches those
    # against IPv4 networks too.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(
        not isinstance(net, str) and (address in net or (mapped is not None and mapped in net))
        for net in set_real_ip_from
    )


def real_address(info: codec.ProxyInfo) -> tuple[str, int] | None:
    """realip: the header's source, or None when it is no IP address (nginx then keeps the
    connection's own address)."""
    try:
        ipaddress.ip_address(info.src_addr)
    except ValueError:
        return None
    return info.src_addr, info.src_port


def client_address(
    info: codec.ProxyInfo | None,
    peer: tuple[str, int],
    set_real_ip_from: Collection[IPNetwork | str],
) -> tuple[tuple[str, int], str | None]:
    """The client's address after a header from ``peer``: the header's source if the peer is
    trusted and the source an IP address, else the peer's own. Second: the info line nginx
    logs when it ignores a source."""
    if info is None or not trusted(peer[0], set_real_ip_from):
        return peer, None
    real = real_address(info)
    if real is None:
        return peer, f'PROXY protocol source "{log_text(info.src_addr.encode())}" ignored'
    return real, None
