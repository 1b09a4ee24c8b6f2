"""The relay moves bytes both ways exactly, bounds its buffers, and ends sessions as nginx."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from mailgate.worker.io.loop import Loop
from mailgate.worker.io.relay import Relay
from mailgate.worker.io.stream import Stream


class Idle:
    """A placeholder handler; the relay replaces it."""

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def connection_lost(self, reason: str) -> None: ...
    def tls_established(self) -> None: ...
    def write_drained(self) -> None: ...


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    return near, far


class Rig:
    """client peer <-> [client stream] relay [backend stream] <-> backend peer."""

    def __init__(self, limit: int = 4096, idle_timeout: float = 30.0, tcp: bool = False) -> None:
        self.loop = Loop()
        self.client_peer, client_end = tcp_pair() if tcp else socket.socketpair()
        self.backend_peer, backend_end = socket.socketpair()
        self.client = Stream(self.loop, client_end, Idle())
        self.backend = Stream(self.loop, backend_end, Idle())
        self.reasons: list[str] = []
        self.relay = Relay(
            self.loop,
            self.client,
            self.backend,
            to_client_limit=limit,
            to_backend_limit=limit,
            idle_timeout=idle_timeout,
            on_done=self.reasons.append,
        )
        for peer in (self.client_peer, self.backend_peer):
            peer.setblocking(False)

    def run_until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            self.loop.run_once(0.01)

    def read(self, peer: socket.socket, size: int) -> bytes:
        data = b""

        def more() -> bool:
            nonlocal data
            try:
                chunk = peer.recv(65536)
            except BlockingIOError:
                return len(data) >= size
            if not chunk:
                return True
            data += chunk
            return len(data) >= size

        self.run_until(more)
        return data

    def close(self) -> None:
        self.client_peer.close()
        self.backend_peer.close()
        self.relay.finish("test over")
        self.loop.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_bytes_flow_both_ways_unchanged(rig: Rig) -> None:
    rig.relay.start()
    rig.client_peer.send(b"a1 SELECT INBOX\r\n")
    assert rig.read(rig.backend_peer, 17) == b"a1 SELECT INBOX\r\n"
    rig.backend_peer.send(b"* 3 EXISTS\r\n")
    assert rig.read(rig.client_peer, 12) == b"* 3 EXISTS\r\n"


def test_pipelined_bytes_are_sent_first(rig: Rig) -> None:
    rig.relay.start(client_pipelined=b"a2 NOOP\r\n", backend_pipelined=b"* OK\r\n")
    assert rig.read(rig.backend_peer, 9) == b"a2 NOOP\r\n"
    assert rig.read(rig.client_peer, 6) == b"* OK\r\n"


def test_a_reader_that_does_not_read_stops_the_sender() -> None:
    rig = Rig(limit=64 * 1024)
    try:
        rig.relay.start()
        rig.backend_peer.setblocking(True)
        rig.backend_peer.settimeout(0.01)
        sent = 0
        try:
            for _ in range(2000):  # the backend floods; the client peer never reads
                sent += rig.backend_peer.send(b"x" * 65536)
                rig.loop.run_once(0)
        except (TimeoutError, BlockingIOError):
            pass
        for _ in range(50):
            rig.loop.run_once(0)
        # The relay queues at most one read beyond its limit; the kernel holds the rest.
        assert rig.client.write_buffer_size < 64 * 1024 + 16384
        assert sent < 2000 * 65536
    finally:
        rig.close()


def test_backend_eof_flushes_to_the_client_then_ends(rig: Rig) -> None:
    rig.relay.start()
    rig.backend_peer.send(b"* BYE logging out\r\n")
    rig.backend_peer.shutdown(socket.SHUT_WR)
    assert rig.read(rig.client_peer, 100) == b"* BYE logging out\r\n"
    rig.run_until(lambda: bool(rig.reasons))
    assert rig.reasons == [""]


def test_client_half_close_still_delivers_the_backend_reply(rig: Rig) -> None:
    rig.relay.start()
    rig.client_peer.send(b"QUIT\r\n")
    rig.client_peer.shutdown(socket.SHUT_WR)
    assert rig.read(rig.backend_peer, 100) == b"QUIT\r\n"  # then EOF: half-closed
    rig.backend_peer.send(b"221 2.0.0 Bye\r\n")
    rig.backend_peer.shutdown(socket.SHUT_WR)
    assert rig.read(rig.client_peer, 100) == b"221 2.0.0 Bye\r\n"
    rig.run_until(lambda: bool(rig.reasons))
    assert rig.reasons == [""]


def test_idle_session_times_out() -> None:
    rig = Rig(idle_timeout=0.05)
    try:
        rig.relay.start()
        rig.run_until(lambda: bool(rig.reasons), seconds=2)
        assert rig.reasons == ["timed out"]
    finally:
        rig.close()


def test_reset_by_the_client_ends_the_session() -> None:
    rig = Rig(tcp=True)
    try:
        rig.relay.start()
        linger_zero = struct.pack("ii", 1, 0)  # close() then sends RST instead of FIN
        rig.client_peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
        rig.client_peer.close()
        rig.run_until(lambda: bool(rig.reasons))
        assert rig.reasons[0].startswith("client recv() failed (104: ")
        assert rig.client.closed and rig.backend.closed
    finally:
        rig.close()
