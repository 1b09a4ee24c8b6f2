"""``process.accept``: a listener's connection as ``socket.accept`` makes it, minus the enums."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailgate.worker.process import _lacks_nodelay, accept


def _connected_pair(
    listener: socket.socket, address: object
) -> tuple[socket.socket, socket.socket]:
    client = socket.socket(listener.family, socket.SOCK_STREAM)
    client.connect(address)
    sock, peer = accept(listener)
    if listener.family != socket.AF_UNIX:
        assert peer[:2] == client.getsockname()[:2]
    return client, sock


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_accepted_tcp_socket_has_the_listeners_family_and_peer(
    family: socket.AddressFamily,
) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.create_server((host, 0), family=family) as listener:
        client, sock = _connected_pair(listener, listener.getsockname())
        with client, sock:
            assert sock.family == family and sock.type == socket.SOCK_STREAM
            assert sock.getpeername()[:2] == client.getsockname()[:2]
            client.sendall(b"ping")
            assert sock.recv(4) == b"ping"


def test_accepted_unix_socket_has_the_unix_family(tmp_path: Path) -> None:
    path = str(tmp_path / "listen.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        client, sock = _connected_pair(listener, path)
        with client, sock:
            assert sock.family == socket.AF_UNIX
            sock.sendall(b"pong")
            assert client.recv(4) == b"pong"


def test_accept_on_an_empty_nonblocking_backlog_raises_blocking_io_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            accept(listener)


def test_a_listener_without_nodelay_is_one_the_worker_must_set_it_for() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert _lacks_nodelay(listener)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert not _lacks_nodelay(listener)


def test_a_unix_listener_needs_no_nodelay(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / "listen.sock"))
        listener.listen()
        assert not _lacks_nodelay(listener)
