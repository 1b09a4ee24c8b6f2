"""The I/O half of auth_http: one HTTP/1.0 request per login attempt, as nginx makes it.

``build_request`` writes the request and ``AuthResponseParser`` judges the answer;
this module connects (TCP or ``unix:``), sends, reads at most the parser's 1024-byte cap and
reports one outcome. Transport failures become :class:`TransportError` with nginx's log line.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.config import model
from mailgate.worker.auth_http.request import AuthRequest, auth_peer_name, build_request
from mailgate.worker.auth_http.response import MAX_RESPONSE, AuthResponseParser, AuthResult
from mailgate.worker.io.connect import Connector, Target
from mailgate.worker.io.loop import Loop, Timer
from mailgate.worker.sansio import NEED_DATA


@dataclass(frozen=True, slots=True)
class TransportError:
    """The auth server could not be asked; log ``log_message`` at error level."""

    log_message: str


AuthOutcome = AuthResult | TransportError


class AuthClient:
    """Ask the server's ``auth_http`` about one login; ``on_done`` is called once."""

    def __init__(
        self,
        loop: Loop,
        server: model.ServerConfig,
        request: AuthRequest,
        on_done: Callable[[AuthOutcome], None],
    ) -> None:
        url = server.auth_http
        assert url is not None, "proxy_pass servers never ask an auth server"
        self.loop = loop
        self.on_done = on_done
        self.peer = auth_peer_name(url)
        self._parser = AuthResponseParser(request, self.peer)
        self._request = build_request(server, request)
        self._sock: socket.socket | None = None
        self._done = False
        target: Target = url.unix_path if url.unix_path is not None else (url.host, url.port)
        self._timer: Timer | None = loop.call_later(server.auth_http_timeout, self._timed_out)
        self._connector: Connector | None = Connector(
            loop, target, server.auth_http_timeout, self._connected
        )

    def cancel(self) -> None:
        """The client went away: drop the request without reporting."""
        self._done = True
        self._cleanup()

    def _connected(self, sock: socket.socket | None, error: str) -> None:
        self._connector = None
        if sock is None:
            self._finish(TransportError(error))
            return
        self._sock = sock
        self.loop.selector.register(sock, selectors.EVENT_WRITE, self._ready)

    def _ready(self, mask: int) -> None:
        assert self._sock is not None
        try:
            if mask & selectors.EVENT_WRITE:
                self._send()
            else:
                self._receive()
        except BlockingIOError:
            return
        except OSError as err:
            self._finish(TransportError(f"auth http server {self.peer} failed ({err})"))

    def _send(self) -> None:
        assert self._sock is not None
        sent = self._sock.send(self._request)
        self._request = self._request[sent:]
        if not self._request:
            self.loop.selector.modify(self._sock, selectors.EVENT_READ, self._ready)

    def _receive(self) -> None:
        assert self._sock is not None
        room = MAX_RESPONSE + 1 - self._parser.buffered
        data = self._sock.recv(max(room, 1))
        result = self._parser.feed(data) if data else self._parser.eof()
        if result is not NEED_DATA:
            self._finish(result)

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(
            TransportError(f"auth http server {self.peer} timed out (110: Connection timed out)")
        )

    def _finish(self, outcome: AuthOutcome) -> None:
        if self._done:
            return
        self._done = True
        self._cleanup()
        self.on_done(outcome)

    def _cleanup(self) -> None:
        if self._timer is not None:
            self.loop.cancel(self._timer)
            self._timer = None
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        if self._sock is not None:
            self.loop.selector.unregister(self._sock)
            self._sock.close()
            self._sock = None
