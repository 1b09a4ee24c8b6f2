"""A session on a real loop with in-loop fake peers: no Dovecot, no auth server process.

The client is a non-blocking TCP socket the test drives; the session's side comes from
``accept()`` as in a worker. The auth_http server and the backend are :class:`ScriptedPeer`
listeners served by the same loop, so every step is deterministic and nothing sleeps
except where a test is about time.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path

from mailgate.config import loader, model
from mailgate.worker.io.loop import Loop
from mailgate.worker.process import accept
from mailgate.worker.session.factory import SessionFactory
from mailgate.worker.session.session import Session
from mailgate.worker.tls.context import Contexts

# answer(all bytes received on this connection so far) -> (reply, close after it) or None
Answer = Callable[[bytes], tuple[bytes, bool] | None]


class Log:
    """The error log, kept in lists (no ``enabled``: it takes info lines too)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.infos: list[str] = []

    def error(self, message: str) -> None:
        self.errors.append(message)

    def info(self, message: str) -> None:
        self.infos.append(message)

    def text(self) -> str:
        return "\n".join(self.errors + self.infos)


class ScriptedPeer:
    """A loopback TCP server on the loop that answers what it has read so far."""

    def __init__(self, loop: Loop, answer: Answer, greeting: bytes = b"") -> None:
        self.loop = loop
        self.answer = answer
        self.greeting = greeting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.requests: list[bytes] = []  # every answered request, in order
        self.open = 0  # connections the peer still has open
        self.closed_by_client = 0
        self._conns: list[socket.socket] = []
        loop.selector.register(self.listener, selectors.EVENT_READ, self._accept)

    def _accept(self, _mask: int) -> None:
        conn, _ = self.listener.accept()
        conn.setblocking(False)
        self.open += 1
        self._conns.append(conn)
        if self.greeting:
            conn.sendall(self.greeting)
        seen = bytearray()
        self.loop.selector.register(conn, selectors.EVENT_READ, lambda _m: self._read(conn, seen))

    def _read(self, conn: socket.socket, seen: bytearray) -> None:
        try:
            data = conn.recv(65536)
        except ConnectionError:
            data = b""
        if not data:
            self.closed_by_client += 1
            self._drop(conn)
            return
        seen += data
        answered = self.answer(bytes(seen))
        if answered is None:
            return
        reply, close = answered
        self.requests.append(bytes(seen))
        seen.clear()
        conn.sendall(reply)
        if close:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self.loop.selector.unregister(conn)
        conn.close()
        self.open -= 1

    def close(self) -> None:
        for conn in self._conns:
            if conn.fileno() >= 0:
                self.loop.selector.unregister(conn)
                conn.close()
        self.loop.selector.unregister(self.listener)
        self.listener.close()


def http_answer(headers: dict[str, str] | Callable[[bytes], dict[str, str] | None]) -> Answer:
    """An HTTP/1.0 auth_http server: one response per request, then close (or, when
    ``headers`` is a function returning None, no answer at all)."""

    def answer(seen: bytes) -> tuple[bytes, bool] | None:
        if b"\r\n\r\n" not in seen:
            return None
        fields = headers(seen) if callable(headers) else headers
        if fields is None:
            return None
        lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        return f"HTTP/1.0 200 OK\r\n{lines}\r\n".encode(), True

    return answer


def pop3_backend(password: bytes = b"secret") -> Answer:
    """A POP3 server: USER and the right PASS log in; STAT answers once logged in."""

    def answer(seen: bytes) -> tuple[bytes, bool] | None:
        if not seen.endswith(b"\r\n"):
            return None
        if seen.startswith(b"USER "):
            return b"+OK\r\n", False
        if seen.startswith(b"PASS "):
            if seen == b"PASS " + password + b"\r\n":
                return b"+OK logged in\r\n", False
            return b"-ERR [AUTH] Authentication failed.\r\n", False
        if seen == b"QUIT\r\n":
            return b"+OK bye\r\n", True
        return b"+OK 0 0\r\n", False

    return answer


class Harness:
    """One loop, fake auth and backend peers, and a factory for sessions with a client."""

    def __init__(self, tmp_path: Path, auth: Answer, server_extra: str = "") -> None:
        self.loop = Loop()
        self.auth = ScriptedPeer(self.loop, auth)
        self.backend = ScriptedPeer(self.loop, pop3_backend(), greeting=b"+OK Dovecot ready.\r\n")
        conf = tmp_path / "mailgate.conf"
        conf.write_text(
            "mail {\n"
            f"    auth_http 127.0.0.1:{self.auth.port}/auth;\n"
            "    server {\n"
            "        listen 127.0.0.1:1110;\n"
            "        protocol pop3;\n"
            f"        {server_extra}\n"
            "    }\n"
            "}\n"
        )
        self.config = loader.load(str(conf))
        self.server = self.config.servers[0]
        self.log = Log()
        self.factory = SessionFactory(self.config, self.log, Contexts(self.config.servers, {}))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.session: Session | None = None
        self.client: socket.socket | None = None
        self.received = bytearray()

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        """A client connected to a new session; the session's side as a worker accepts it.
        ``rcvbuf``: a small receive buffer, for a client that soon stops taking replies."""
        client = socket.socket()
        if rcvbuf is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.connect(self._listener.getsockname())
        client.setblocking(False)
        sock, peer = accept(self._listener)
        sock.setblocking(False)
        listen: model.Listen = self.server.listens[0]
        sessions_before = set(self.loop.connections)
        self.factory(sock, peer, listen, self.server, self.loop)
        (self.session,) = set(self.loop.connections) - sessions_before  # type: ignore[assignment]
        self.client = client
        return client

    def run_until(self, done: Callable[[], bool], timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out waiting for the session"
            self.loop.run_once(max_wait=0.01)

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.loop.run_once(max_wait=0.01)

    def pull(self) -> bool:
        """Read what the client has been sent; True once the session closed it (EOF)."""
        assert self.client is not None
        try:
            data = self.client.recv(65536)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
        self.received += data
        return False

    def expect(self, ending: bytes, timeout: float = 2.0) -> bytes:
        """Run the loop until the client has received ``ending``; returns all received."""
        self.run_until(lambda: self.pull() or self.received.endswith(ending), timeout)
        assert self.received.endswith(ending), bytes(self.received)
        text = bytes(self.received)
        self.received.clear()
        return text

    def send(self, data: bytes) -> None:
        assert self.client is not None
        self.client.sendall(data)

    def closed(self) -> bool:
        """Whether the client sees the session's end (EOF); reads what came before it."""
        eof = False
        while True:
            before = len(self.received)
            eof = self.pull()
            if eof or len(self.received) == before:
                return eof

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.client is not None:
            self.client.close()
        self._listener.close()
        self.auth.close()
        self.backend.close()
        self.loop.close()
