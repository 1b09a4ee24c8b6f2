"""The PROXY header reader on a socketpair, and set_real_ip_from trust."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from mailgate.worker.proxy_protocol import codec, reader
from mailgate.worker.sansio import NEED_DATA

V4 = ipaddress.ip_network("192.0.2.0/24")
HEADER = b"PROXY TCP4 198.51.100.7 192.0.2.2 4321 143\r\n"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_a_header_in_pieces_is_read_and_nothing_after_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    header = reader.HeaderReader(ours)
    assert header.read() is NEED_DATA  # nothing sent yet
    for piece in (HEADER[:9], HEADER[9:30]):
        theirs.sendall(piece)
        assert header.read() is NEED_DATA
    theirs.sendall(HEADER[30:] + b"a001 CAPABILITY\r\n")
    result = header.read()
    assert isinstance(result, codec.ProxyHeader) and result.info is not None
    assert (result.info.src_addr, result.info.src_port) == ("198.51.100.7", 4321)
    assert ours.recv(100) == b"a001 CAPABILITY\r\n"  # the client's bytes stay in the socket


def test_a_broken_header_fails_as_broken(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.sendall(b"GET / HTTP/1.0\r\n")
    result = reader.HeaderReader(ours).read()
    assert isinstance(result, reader.Failed) and result.broken


def test_a_client_leaving_mid_header_fails_as_gone(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    header = reader.HeaderReader(ours)
    theirs.sendall(HEADER[:12])
    assert header.read() is NEED_DATA
    theirs.close()
    assert header.read() == reader.Failed("client closed connection", broken=False)


@pytest.mark.parametrize(
    ("peer", "networks", "trusted"),
    [
        ("192.0.2.9", (V4,), True),
        ("::ffff:192.0.2.9", (V4,), True),  # a dual-stack listener's IPv4 peer
        ("198.51.100.1", (V4,), False),
        ("unix:", ("unix:",), True),
        ("unix:", (V4,), False),
        ("not an address", (V4,), False),
    ],
)
def test_set_real_ip_from(peer: str, networks: tuple[object, ...], trusted: bool) -> None:
    assert reader.trusted(peer, networks) is trusted  # type: ignore[arg-type]


def test_a_trusted_header_replaces_the_address() -> None:
    info = codec.ProxyInfo("198.51.100.7", 4321, "192.0.2.2", 143)
    assert reader.client_address(info, ("192.0.2.9", 5000), (V4,)) == (
        ("198.51.100.7", 4321),
        None,
    )
    assert reader.client_address(info, ("10.0.0.1", 5000), (V4,)) == (("10.0.0.1", 5000), None)


def test_a_source_that_is_no_address_is_ignored_with_a_note() -> None:
    info = codec.ProxyInfo("unix:/run/x", 0, "192.0.2.2", 143)
    address, note = reader.client_address(info, ("192.0.2.9", 5000), (V4,))
    assert address == ("192.0.2.9", 5000)
    assert note == 'PROXY protocol source "unix:/run/x" ignored'
