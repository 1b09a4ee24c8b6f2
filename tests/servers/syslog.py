"""A syslog daemon's UDP port on the loopback, for ``error_log syslog:server=...`` tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from tests.servers.ports import LOOPBACK
from tests.support.processes import wait_until


class SyslogReceiver:
    """Keeps every datagram the gateway sends, in arrival order."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []

    def received(self) -> list[bytes]:
        """Every datagram so far (never waits)."""
        with contextlib.suppress(BlockingIOError):
            while True:
                self.datagrams.append(self.sock.recv(65536))
        return self.datagrams

    def wait_for(self, text: str, timeout: float = 5.0) -> bytes | None:
        """The first datagram holding ``text``, once it came."""
        found: list[bytes] = []

        def arrived() -> bool:
            found[:] = [d for d in self.received() if text.encode() in d]
            return bool(found)

        return found[0] if wait_until(arrived, timeout) else None


@contextlib.contextmanager
def running_receiver() -> Iterator[SyslogReceiver]:
    receiver = SyslogReceiver()
    try:
        yield receiver
    finally:
        receiver.sock.close()
