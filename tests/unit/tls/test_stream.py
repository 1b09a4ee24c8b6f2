"""Stream: plain and TLS bytes through the worker loop, against real sockets and Python's ssl."""

from __future__ import annotations

import contextlib
import gc
import selectors
import socket
import ssl
import struct
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker.io.loop import Loop
from mailgate.worker.io.stream import Stream
from mailgate.worker.tls import context


class Echo:
    """Echoes what it reads; on b"STARTTLS\\r\\n" answers and upgrades, as a mail server does."""

    def __init__(self, ctx: SSL.Context | None) -> None:
        self.ctx = ctx
        self.stream: Stream | None = None
        self.events: list[str] = []

    def data_received(self, data: bytes) -> None:
        assert self.stream is not None
        if data == b"STARTTLS\r\n" and self.ctx is not None:
            self.stream.write(b"OK go ahead\r\n")
            self.stream.start_tls(self.ctx)
            return
        self.stream.write(data)

    def eof_received(self) -> None:
        self.events.append("eof")
        assert self.stream is not None
        self.stream.close()

    def connection_lost(self, reason: str) -> None:
        self.events.append(f"lost: {reason}")

    def tls_established(self) -> None:
        self.events.append("tls")

    def write_drained(self) -> None:
        pass


class Server:
    """A loop in a thread that accepts connections into ``Echo`` streams."""

    def __init__(self, make_handler: Callable[[], Echo], implicit_tls: bool) -> None:
        self.loop = Loop()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.handlers: list[Echo] = []
        self.make_handler = make_handler
        self.implicit_tls = implicit_tls
        self.loop.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _accept(self, _mask: int) -> None:
        sock, _ = self.listener.accept()
        handler = self.make_handler()
        handler.stream = Stream(self.loop, sock, handler)
        self.handlers.append(handler)
        if self.implicit_tls:
            assert handler.ctx is not None
            handler.stream.start_tls(handler.ctx)

    def _run(self) -> None:
        while self.running:
            self.loop.run_once(0.05)

    def stop(self) -> None:
        self.running = False
        self.thread.join()
        for handler in self.handlers:
            if handler.stream is not None:
                handler.stream.close()
        self.listener.close()
        self.loop.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ctx(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> SSL.Context:
    folder: Path = tmp_path_factory.mktemp("pki")
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))
    server = model.ServerConfig(
        source=model.Source("t", 1),
        listens=(),
        protocol=model.Protocol.IMAP,
        ssl_certificate=(str(folder / "cert.pem"),),
        ssl_certificate_key=(str(folder / "key.pem"),),
    )
    return context.build_context(server)


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def serve(ctx: SSL.Context | None, implicit_tls: bool) -> Iterator[Server]:
    server = Server(lambda: Echo(ctx), implicit_tls)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plain_server() -> Iterator[Server]:
    yield from serve(None, implicit_tls=False)


@pytest.fixture
def tls_server(ctx: SSL.Context) -> Iterator[Server]:
    yield from serve(ctx, implicit_tls=True)


@pytest.fixture
def starttls_server(ctx: SSL.Context) -> Iterator[Server]:
    yield from serve(ctx, implicit_tls=False)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


def test_plain_stream_echoes_bytes(plain_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", plain_server.port), timeout=5) as sock:
        sock.sendall(b"hello\r\n")
        assert read_exactly(sock, 7) == b"hello\r\n"


def test_implicit_tls_stream_echoes_bytes(tls_server: Server, client_ctx: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as raw,
        client_ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(b"secret\r\n")
        assert read_exactly(sock, 8) == b"secret\r\n"
        assert sock.version() == "TLSv1.3"


def test_many_records_arrive_whole_through_tls(
    tls_server: Server, client_ctx: ssl.SSLContext
) -> None:
    # One thread only: an OpenSSL connection must not read and write from two threads at once.
    chunk = bytes(range(256)) * 256  # 64 KiB: several records each way
    with (
        socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as raw,
        client_ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        for _ in range(16):
            sock.sendall(chunk)
            assert read_exactly(sock, len(chunk)) == chunk


def test_starttls_upgrades_the_same_connection(
    starttls_server: Server, client_ctx: ssl.SSLContext
) -> None:
    with socket.create_connection(("127.0.0.1", starttls_server.port), timeout=5) as raw:
        raw.sendall(b"STARTTLS\r\n")
        assert read_exactly(raw, 13) == b"OK go ahead\r\n"
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"inside\r\n")
            assert read_exactly(sock, 8) == b"inside\r\n"


def test_failed_handshake_reports_the_reason(tls_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as sock:
        sock.sendall(b"this is not a TLS client hello\r\n")
        with contextlib.suppress(ConnectionResetError):
            sock.recv(100)  # an alert, EOF or a reset
    for _ in range(100):
        events = tls_server.handlers[0].events if tls_server.handlers else []
        if events:
            break
        threading.Event().wait(0.02)
    assert events and events[0].startswith("lost: SSL_do_handshake() failed (SSL: ")


def _events_after_tls(
    server: Server, client_ctx: ssl.SSLContext, end: Callable[[ssl.SSLSocket], None]
) -> list[str]:
    """The handler's events once a TLS client that echoed one byte ends with ``end``."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock = client_ctx.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(b"x")
    read_exactly(sock, 1)
    end(sock)
    for _ in range(100):
        if server.handlers[0].events[1:]:
            break
        threading.Event().wait(0.02)
    return server.handlers[0].events


def test_tls_client_dropping_tcp_is_an_eof(tls_server: Server, client_ctx: ssl.SSLContext) -> None:
    def drop(sock: ssl.SSLSocket) -> None:
        sock.shutdown(socket.SHUT_RDWR)  # plain TCP FIN, no close_notify, as mail clients do
        sock.close()

    assert _events_after_tls(tls_server, client_ctx, drop) == ["tls", "eof"]


def test_tls_client_sending_close_notify_is_an_eof(
    tls_server: Server, client_ctx: ssl.SSLContext
) -> None:
    def close_notify(sock: ssl.SSLSocket) -> None:
        sock.unwrap().close()

    assert _events_after_tls(tls_server, client_ctx, close_notify) == ["tls", "eof"]


def test_tls_client_resetting_is_a_lost_connection_with_the_errno(
    tls_server: Server, client_ctx: ssl.SSLContext
) -> None:
    def reset(sock: ssl.SSLSocket) -> None:
        # SO_LINGER 0 makes close() send RST, as a client closing with data unread does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    assert _events_after_tls(tls_server, client_ctx, reset) == [
        "tls",
        "lost: SSL_read() failed (104: ECONNRESET)",
    ]


class MemoryClient:
    """A TLS client whose records we send ourselves, so which segment carries what is ours."""

    def __init__(self, raw: socket.socket, client_ctx: ssl.SSLContext) -> None:
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client_ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.raw.sendall(self.outgoing.read())
                self.incoming.write(self.raw.recv(65536))
        self.raw.sendall(self.outgoing.read())

    def send_in_one_segment(self, *messages: bytes) -> None:
        for message in messages:
            self.tls.write(message)  # one record each
        self.raw.sendall(self.outgoing.read())

    def read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            try:
                data += self.tls.read(size - len(data))
            except ssl.SSLWantReadError:
                chunk = self.raw.recv(65536)
                assert chunk, f"EOF after {data!r}"
                self.incoming.write(chunk)
        return data


def test_records_that_arrive_in_one_segment_are_all_delivered(
    tls_server: Server, client_ctx: ssl.SSLContext
) -> None:
    # OpenSSL reads ahead: both records land in its buffer with one read, and the socket never
    # becomes readable again for the second; the stream must still hand it over.
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as raw:
        client = MemoryClient(raw, client_ctx)
        client.send_in_one_segment(b"one\r\n", b"two\r\n")
        assert client.read_exactly(10) == b"one\r\ntwo\r\n"


def test_a_closed_stream_lets_go_of_its_handler() -> None:
    # Owner and stream refer to each other; after close the owner must be freed by reference
    # counting alone (the cyclic collector would free it late, and at a cost per connection).
    loop = Loop()
    left, right = socket.socketpair()
    handler = Echo(None)
    handler.stream = Stream(loop, left, handler)
    gone = weakref.ref(handler)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        handler.stream.close()
        del handler
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()
        right.close()
        loop.close()


class Recorder(Echo):
    """Echo that notes what the stream knows of the TLS session once it is established."""

    def __init__(self, ctx: SSL.Context | None) -> None:
        super().__init__(ctx)
        self.seen: dict[str, object] = {}

    def tls_established(self) -> None:
        super().tls_established()
        stream = self.stream
        assert stream is not None and stream.tls is not None
        conn = stream.tls
        self.seen = {
            "version": (stream.tls_version, conn.get_protocol_version_name()),
            "cipher": (stream.tls_cipher, conn.get_cipher_name()),
            "server name": (stream.tls_server_name, conn.get_servername()),
            "resumed": stream.tls_resumed,
        }


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_the_stream_reads_version_cipher_and_server_name_as_pyopenssl_does(
    ctx: SSL.Context, client_ctx: ssl.SSLContext, version: ssl.TLSVersion
) -> None:
    client_ctx.maximum_version = version
    server = Server(lambda: Recorder(ctx), implicit_tls=True)
    try:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            sock.sendall(b"x")
            read_exactly(sock, 1)
            cipher = sock.cipher()
        seen = server.handlers[0].seen  # type: ignore[attr-defined]
    finally:
        server.stop()
    assert cipher is not None
    assert seen["version"] == (cipher[1], cipher[1])
    assert seen["cipher"] == (cipher[0], cipher[0])
    assert seen["server name"] == (b"localhost", b"localhost")
    assert seen["resumed"] is False


def test_a_write_to_a_client_that_reset_is_a_lost_connection_with_the_errno(
    ctx: SSL.Context, client_ctx: ssl.SSLContext
) -> None:
    # s_time -reuse and many mail clients hang up right after the handshake, before the
    # greeting: the greeting's write is where the stream learns it.
    loop = Loop()
    handler = Echo(ctx)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        accepted.setblocking(False)
        handler.stream = Stream(loop, accepted, handler)
        handler.stream.start_tls(ctx)
        client = client_ctx.wrap_socket(
            raw, server_hostname="localhost", do_handshake_on_connect=False
        )
        shaking = threading.Thread(target=client.do_handshake)
        shaking.start()
        while "tls" not in handler.events:
            loop.run_once(0.05)
        shaking.join()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        threading.Event().wait(0.1)  # the RST arrives
        handler.stream.write(b"* OK ready\r\n")
    loop.close()
    assert handler.events[1] in (
        "lost: send() failed (104: ECONNRESET)",
        "lost: send() failed (32: EPIPE)",
    )
    assert handler.stream.closed
