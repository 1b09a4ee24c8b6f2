"""Two streams joined after login: what one side reads, the other side writes.

Back-pressure: a side stops reading while the other side has ``limit`` bytes or more queued
(``proxy_buffer`` towards the client, the client buffer size towards the backend, as nginx
sizes them), so a fast sender never grows a slow receiver's buffer without bound.

Half-close: when the client finishes sending, its bytes are flushed to the backend, which is
then half-closed, and the backend's answer (an SMTP ``221``, an IMAP ``BYE``) still reaches
the client; the session ends when the backend finishes too. When the backend finishes first,
its last bytes are flushed to the client and the session ends, as behind nginx.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mailgate.worker.io.loop import Loop, Timer
from mailgate.worker.io.stream import Stream


class _Side:
    """The handler of one stream: forwards to the other side's stream."""

    def __init__(self, relay: Relay, name: str, limit: int) -> None:
        self.relay = relay
        self.name = name
        self.limit = limit
        self.stream: Stream
        self.peer: _Side
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.relay.touch()
        self.peer.stream.write(data)
        if self.peer.stream.write_buffer_size >= self.limit:
            self.stream.pause_reading()

    def eof_received(self) -> None:
        self.eof = True
        self.relay.side_finished(self)

    def connection_lost(self, reason: str) -> None:
        self.relay.finish(f"{self.name} {reason}")

    def tls_established(self) -> None:
        pass  # both streams are past any handshake when the relay starts

    def write_drained(self) -> None:
        self.relay.touch()
        if not self.peer.eof and not self.peer.stream.closed:
            self.peer.stream.resume_reading()
        if self.peer.eof:
            self.relay.side_finished(self.peer)


class Relay:
    """Relay bytes between ``client`` and ``backend`` until one side ends the session."""

    def __init__(
        self,
        loop: Loop,
        client: Stream,
        backend: Stream,
        *,
        to_client_limit: int,
        to_backend_limit: int,
        idle_timeout: float,
        on_done: Callable[[str], None],
    ) -> None:
        self.loop = loop
        self.on_done = on_done
        self.idle_timeout = idle_timeout
        self.done = False
        self.client = _Side(self, "client", to_backend_limit)
        self.backend = _Side(self, "upstream", to_client_limit)
        self.client.stream, self.client.peer = client, self.backend
        self.backend.stream, self.backend.peer = backend, self.client
        client.set_handler(self.client)
        backend.set_handler(self.backend)
        self._last_activity = time.monotonic()
        self._timer: Timer | None = loop.call_later(idle_timeout, self._check_idle)

    def start(self, client_pipelined: bytes = b"", backend_pipelined: bytes = b"") -> None:
        """Forward what arrived before the relay existed, then let both sides read."""
        for side, data in ((self.client, client_pipelined), (self.backend, backend_pipelined)):
            if data:
                side.data_received(data)
        self.client.stream.resume_reading()
        self.backend.stream.resume_reading()

    def touch(self) -> None:
        self._last_activity = time.monotonic()

    def side_finished(self, side: _Side) -> None:
        """``side`` sent EOF; once its bytes are flushed to the peer, act on it."""
        if self.done or side.peer.stream.write_buffer_size:
            return  # write_drained calls again when the peer has sent everything
        if side is self.client and not self.backend.eof:
            self.backend.stream.shutdown_write()
            return
        self.finish("")

    def finish(self, reason: str) -> None:
        """Close both streams once; ``reason`` is empty for a normal end."""
        if self.done:
            return
        self.done = True
        if self._timer is not None:
            self.loop.cancel(self._timer)
            self._timer = None
        self.client.stream.close()
        self.backend.stream.close()
        self.on_done(reason)

    def _check_idle(self) -> None:
        idle = time.monotonic() - self._last_activity
        if idle >= self.idle_timeout:
            self._timer = None
            self.finish("timed out")
            return
        self._timer = self.loop.call_later(self.idle_timeout - idle, self._check_idle)
