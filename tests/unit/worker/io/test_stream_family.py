"""``stream.socket_family``: the raw family number of a socket, equal to ``sock.family``."""

from __future__ import annotations

import socket

import pytest

from mailgate.worker.io.stream import socket_family


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX])
def test_socket_family_matches_the_enum(family: socket.AddressFamily) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        assert socket_family(sock) == sock.family == family
        assert type(socket_family(sock)) is int
