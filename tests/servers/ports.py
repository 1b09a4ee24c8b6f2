"""Free loopback ports and greeting probes."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return `count` distinct ports that were free on `host` a moment ago.

    All sockets stay bound until every port is picked, so the ports differ from each other.
    Another process may still grab one before the server binds it; that race is accepted.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def read_greeting(host: str, port: int, timeout: float = 2.0) -> bytes:
    """Connect, read the server's first line and close."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(512)
            if not chunk:
                break
            data += chunk
        return data


def wait_for_greeting(
    host: str,
    port: int,
    prefix: bytes,
    timeout: float = 15.0,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Poll until a connection to host:port is greeted with a line starting with `prefix`.

    `alive` lets the caller stop early when the server process has already died, so a broken
    config fails in milliseconds instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"server for {host}:{port} exited before greeting")
        try:
            line = read_greeting(host, port)
        except OSError as exc:
            last = repr(exc)
        else:
            if line.startswith(prefix):
                return
            last = repr(line)
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not greet with {prefix!r} in {timeout}s: {last}")
