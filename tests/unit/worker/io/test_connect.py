"""Connector: a non-blocking connect to a backend on the worker's loop."""

from __future__ import annotations

import socket

from mailgate.worker.io.connect import Connector
from mailgate.worker.io.loop import Loop


def test_a_backend_connection_has_nodelay() -> None:
    # The backend's login replies must not wait for a delayed ACK (nginx's tcp_nodelay).
    loop = Loop()
    done: list[tuple[socket.socket | None, str]] = []
    with socket.create_server(("127.0.0.1", 0)) as backend:
        Connector(
            loop, backend.getsockname()[:2], 5.0, lambda sock, error: done.append((sock, error))
        )
        for _ in range(100):
            if done:
                break
            loop.run_once(0.05)
        sock, error = done[0]
        assert error == "" and sock is not None
        with sock:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    loop.close()
