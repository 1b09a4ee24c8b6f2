"""One client connection, from accept to close: nginx's mail session.

The session is the conductor: the protocol machine decides every byte the client sees,
``upstream`` asks the auth server and logs in to the backend, ``accounting`` counts and
records, ``proxy_protocol.reader`` reads a PROXY header, ``stream`` and ``relay`` move the
bytes. What lives here is the order of the phases and their timers:

    [PROXY header] -> [TLS handshake] -> [SMTP: client name, greeting delay] -> greeting
    -> commands (STARTTLS, auth exchanges) -> auth_http (or proxy_pass) -> backend login
    -> relay

The client's bytes are read into a small inbox and fed to the machine no faster than its
``read_size()``, so the command buffer never exceeds its cap; reading pauses while the
inbox holds bytes the machine cannot take, and while the auth server or backend is asked.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mailgate.config import model
from mailgate.worker.auth_http.request import UNAVAILABLE
from mailgate.worker.backend import login
from mailgate.worker.io.loop import Loop, Timer
from mailgate.worker.io.relay import Relay
from mailgate.worker.io.stream import Stream, socket_family
from mailgate.worker.observe.access_log import CloseReason
from mailgate.worker.protocols import (
    MACHINES,
    NEED_DATA,
    PAUSED,
    Close,
    Login,
    Phase,
    Send,
    StartTLS,
    replies,
)
from mailgate.worker.proxy_protocol import codec, reader
from mailgate.worker.sansio import log_text
from mailgate.worker.session.accounting import Accounting
from mailgate.worker.session.upstream import UpstreamLogin
from mailgate.worker.tls import client_cert

if TYPE_CHECKING:  # the factory makes sessions: only a type here, not an import cycle
    from mailgate.worker.session.factory import SessionFactory

# A proxy sends its header with the connection: a client still sending one after this long is
# not a proxy that nginx's ``timeout`` (60 s by default) should wait for.
PROXY_HEADER_TIMEOUT = 5.0
POP3_CLIENT_BUFFER = 128  # nginx's fixed POP3 command buffer
FINAL_LINE_GRACE = 5.0  # seconds a closing session may spend writing its last line


def _client_buffer(server: model.ServerConfig) -> int:
    sizes = {
        model.Protocol.IMAP: server.imap_client_buffer,
        model.Protocol.POP3: POP3_CLIENT_BUFFER,
        model.Protocol.SMTP: server.smtp_client_buffer,
    }
    return sizes[server.protocol]


def _peer(sock: socket.socket, peer: Any) -> tuple[str, int]:
    """``(host, port)`` from the address ``accept()`` returned; ``("unix:", 0)`` for UNIX."""
    if socket_family(sock) == socket.AF_UNIX:
        return "unix:", 0
    return peer[0], peer[1]


class Session:
    """A client connection and everything it opens (auth request, backend, relay)."""

    def __init__(
        self,
        factory: SessionFactory,
        number: int,
        sock: socket.socket,
        peer: Any,
        *,
        listen: model.Listen,
        server: model.ServerConfig,
        loop: Loop,
    ) -> None:
        self.factory = factory
        self.log, self._info_enabled = factory.log_for(server)
        self.number = number
        self.sock, self.listen, self.server, self.loop = sock, listen, server, loop
        self.client_addr, self.client_port = _peer(sock, peer)
        self.proxy: codec.ProxyInfo | None = None
        self.client_host = UNAVAILABLE
        self.login: bytes | None = None
        self.upstream: str | None = None
        self.action: str | None = (
            "reading PROXY protocol" if listen.proxy_protocol else "SSL handshaking"
        )
        self.closed = False
        self.stream: Stream | None = None
        self.relay: Relay | None = None
        self.inbox = bytearray()
        self._cancel_lookup: Callable[[], None] | None = None
        self._timer: Timer | None = None
        self._deadline = 0.0
        self._header: reader.HeaderReader | None = None  # reading a PROXY header
        self._blocked = False  # replies to the client are unsent: commands wait (back-pressure)
        self._client_eof = False
        self.accounting = Accounting(
            factory.listener_metrics(listen, server),
            (self.client_addr, self.client_port),
            listen,
            server,
        )
        self.upstream_login = UpstreamLogin(self)
        self.machine = MACHINES[server.protocol](server, tls=listen.ssl)
        loop.track(self)
        if self._info_enabled:
            self.log.info(
                f"*{number} client {self.client_addr}:{self.client_port} connected to {listen.text}"
            )
        if listen.proxy_protocol:
            self.arm_timeout(min(server.timeout, PROXY_HEADER_TIMEOUT))
            self._header = reader.HeaderReader(sock)
            self.loop.selector.register(self.sock, 1, self._proxy_header_ready)
        else:
            self.arm_timeout(server.timeout)
            self._start_stream()

    # -- logging ----------------------------------------------------------------------------

    def _context(self) -> str:
        """nginx's mail log context: what we were doing and with whom."""
        # nginx leaves the action out of the two lines a session logs between phases.
        text = f" while {self.action}" if self.action else ""
        text += f", client: {self.client_addr}"
        if self.machine.tls and not self.listen.ssl:
            text += " using starttls"
        text += f", server: {self.listen.text}"
        if self.login is not None:
            text += f', login: "{log_text(self.login)}"'
        if self.upstream is not None:
            text += f", upstream: {self.upstream}"
        return text

    def info(self, message: str) -> None:
        if not self._info_enabled:
            return  # hot path: the context string is the costly part, and nobody reads it
        self.log.info(f"*{self.number} {message}{self._context()}")

    def error(self, message: str) -> None:
        self.log.error(f"*{self.number} {message}{self._context()}")

    # -- timers -----------------------------------------------------------------------------

    def arm_timeout(self, seconds: float) -> None:
        """(Re)start the phase timer; one heap entry per session, moved forward lazily.

        Called when a phase starts or a command completes, never for a mere read: a client
        that drips a byte at a time must still finish its command within ``timeout``."""
        self._deadline = time.monotonic() + seconds
        timer = self._timer
        if timer is not None and timer.when > self._deadline:
            self.loop.cancel(timer)  # only the short PROXY-header deadline comes first
            timer = None
        if timer is None:
            self._timer = self.loop.call_later(seconds, self._check_timeout)

    def _disarm_timeout(self) -> None:
        if self._timer is not None:
            self.loop.cancel(self._timer)
            self._timer = None

    def _check_timeout(self) -> None:
        self._timer = None
        left = self._deadline - time.monotonic()
        if left > 0:
            self._timer = self.loop.call_later(left, self._check_timeout)
            return
        if self.upstream_login.at_backend:
            self.upstream_login.timed_out()
            return
        self.info("client timed out")
        self._close_because(CloseReason.TIMEOUT)

    # -- PROXY protocol header (read before anything else, with MSG_PEEK as nginx) -----------

    def _proxy_header_ready(self, _mask: int = 0) -> None:
        assert self._header is not None
        result = self._header.read()
        if result is NEED_DATA:
            return
        if isinstance(result, reader.PeerGone):
            self.info(result.log_message)
            self._close_because(CloseReason.CLIENT_CLOSED)
            return
        if isinstance(result, codec.BrokenHeader):
            if result.log_message:
                self.error(result.log_message)
            self._close_because(CloseReason.PROXY_PROTOCOL)
            return
        self._stop_header()
        self.proxy = result.info
        if result.info is not None and reader.trusted(
            self.client_addr, self.server.set_real_ip_from
        ):
            real = reader.real_address(result.info)
            if real is None:
                shown = log_text(result.info.src_addr.encode())
                self.info(f'PROXY protocol source "{shown}" ignored')
            else:
                self.client_addr, self.client_port = real
        self.arm_timeout(self.server.timeout)
        self._start_stream()

    def _stop_header(self) -> None:
        if self._header is not None:
            self.loop.selector.unregister(self.sock)
            self._header = None

    # -- client stream ------------------------------------------------------------------------

    def _start_stream(self) -> None:
        if self.closed:
            return
        self.stream = Stream(self.loop, self.sock, self)
        if self.listen.ssl:
            self.action = "SSL handshaking"
            self._start_tls(self.stream)
        else:
            self._before_greeting()

    def data_received(self, data: bytes) -> None:
        if self.upstream_login.credentials is not None and self.relay is None:
            # While the auth server or the backend is asked, the client is still read, so that
            # one that leaves ends the session; what it sends is held (up to its command
            # buffer) for the backend or the next attempt, and reading stops when that is full.
            self.inbox += data
            if len(self.inbox) >= _client_buffer(self.server):
                self._set_reading(False)
            return
        if self.machine.phase is Phase.GREETING:
            # Only an SMTP greeting delay lets the client talk first; the machine answers 503.
            shown = log_text(data[:128].replace(b"\r", b"_").replace(b"\n", b"_"))
            self.info(f'client was rejected before greeting: "{shown}"')
        self.inbox += data
        self._pump()

    def eof_received(self) -> None:
        self._client_eof = True
        self.machine.receive_data(b"")
        if self.upstream_login.credentials is not None and self.relay is None:
            self.info("client prematurely closed connection")
            self._close_because(CloseReason.CLIENT_CLOSED)
            return
        self._pump()

    def connection_lost(self, reason: str) -> None:
        self.info(reason)
        handshaking = self.accounting.handshaking
        self._close_because(CloseReason.TLS_FAILED if handshaking else CloseReason.CLIENT_CLOSED)

    def tls_established(self) -> None:
        assert self.stream is not None
        self.accounting.handshake_done(self.stream)
        if self.server.ssl_verify_client is not model.VerifyClient.OFF:
            # ``ssl_verify_client``: nginx judges the certificate after the handshake.
            assert self.stream.tls is not None
            outcome = client_cert.verify_result(self.stream.tls, self.server)
            if outcome.rejected:
                self.info(outcome.log)
                client_cert.remove_session(self.stream.tls)
                self.accounting.because(CloseReason.CERT_REJECTED)
                cert_error = outcome.reply is client_cert.VerifyReply.CERT_ERROR
                lines = replies.CERT_ERROR if cert_error else replies.NO_CERT
                self.send_and_close(lines[self.server.protocol])
                return
        if self.machine.phase is Phase.STARTTLS:
            self.machine.tls_started()
            self.action = "in auth state"
            self._pump()
            return
        self._before_greeting()

    def write_drained(self) -> None:
        if self._blocked:
            self._blocked = False
            self._pump()

    # -- before the greeting: SMTP client name, greeting delay ------------------------------

    def _before_greeting(self) -> None:
        resolver = None
        if self.server.protocol is model.Protocol.SMTP:
            resolver = self.factory.resolver(self.server, self.loop)
        if resolver is None or self.client_addr == "unix:":
            self._after_lookup()
            return
        assert self.stream is not None
        self.stream.pause_reading()
        self.action = "in resolving"
        self._cancel_lookup = resolver.client_host(
            self.client_addr, self._looked_up, self.server.resolver_timeout
        )

    def _looked_up(self, host: str, log_line: str | None) -> None:
        self._cancel_lookup = None
        self.client_host = host
        if log_line:
            self.error(log_line)
        self._after_lookup()

    def _after_lookup(self) -> None:
        assert self.stream is not None
        self.action = "in auth state"
        delay = self.server.smtp_greeting_delay
        if self.server.protocol is model.Protocol.SMTP and delay > 0:
            # The client may talk meanwhile; the machine answers an early talker with 503.
            self.stream.resume_reading()
            self.loop.call_later(delay, self._greet)
            return
        self._greet()

    def _greet(self) -> None:
        if self.closed or self.machine.phase is not Phase.GREETING:
            return
        assert self.stream is not None
        self.stream.write(self.machine.greeting())
        self.stream.resume_reading()
        self._pump()

    # -- commands -----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Feed the machine and act on its events until it needs the client or pauses."""
        stream = self.stream
        while not self.closed and stream is not None:
            if stream.write_buffer_size:
                # A client that does not read its replies gets no more of them: commands
                # wait in the socket until the replies are sent (nginx's "blocked").
                self._blocked = True
                self._set_reading(False)
                return
            room = self.machine.read_size()
            if self.inbox and room:
                chunk = bytes(self.inbox[:room])
                del self.inbox[:room]
                self.machine.receive_data(chunk)
            event = self.machine.next_event()
            if event is NEED_DATA:
                if self.inbox and self.machine.read_size():
                    continue
                self._set_reading(not self.inbox)
                return
            if event is PAUSED:
                if self.machine.phase is Phase.GREETING and self.inbox:
                    self._set_reading(False)
                return
            if isinstance(event, Send):
                self.arm_timeout(self.server.timeout)  # a command (or one of its lines) ended
                stream.write(event.data)
            elif isinstance(event, StartTLS):
                self.arm_timeout(self.server.timeout)
                # Whatever the client pipelined after STARTTLS is never read as commands.
                self.inbox.clear()
                self.action = "in starttls state"
                self._start_tls(stream)
                return
            elif isinstance(event, Login):
                refusal = self.upstream_login.refusal(event.credentials)
                if refusal is not None:
                    stream.write(refusal)
                    continue
                self._set_reading(len(self.inbox) < _client_buffer(self.server))
                self.login = event.credentials.user
                self.accounting.record.login = event.credentials.user
                self._disarm_timeout()
                self.upstream_login.start(event.credentials)
                return
            elif isinstance(event, Close):
                self.accounting.because(
                    CloseReason.CLIENT_CLOSED if self._client_eof else CloseReason.QUIT
                )
                self._finish_with_flush()
                return

    def _set_reading(self, on: bool) -> None:
        if self.stream is None:
            return
        if on:
            self.stream.resume_reading()
        else:
            self.stream.pause_reading()

    def _start_tls(self, stream: Stream) -> None:
        ctx = self.factory.context(self.server)
        assert ctx is not None, "TLS is only started (or offered) on a server with a context"
        self.accounting.tls_started()
        stream.start_tls(ctx)

    def _finish_with_flush(self) -> None:
        if self.stream is not None:
            self.stream.close_after_flush()
        self.close()

    def send_and_close(self, line: bytes) -> None:
        """Write a final line to the client and close once it is sent."""
        if self.stream is not None:
            self.stream.write(line)
        self._finish_with_flush()

    def _close_because(self, reason: CloseReason) -> None:
        self.accounting.because(reason)
        self.close()

    # -- after the auth step and the backend login (called by ``upstream``) -------------------

    def answer_refusal(self, message: bytes | None, error_code: bytes | None) -> None:
        """The login was refused and the client may try again: back to commands."""
        if self.closed or self.stream is None:
            return
        self.action = "in auth state"
        self.login = None
        self.stream.write(self.machine.login_failed(message, error_code))
        self.arm_timeout(self.server.timeout)
        self._pump()

    def logged_in(self, done: login.Done, backend: Stream) -> None:
        """The backend accepted the login: answer the client, then relay."""
        client = self.stream
        assert client is not None
        self._disarm_timeout()
        self.accounting.relay_started(backend)
        self.action = None
        self.info("client logged in")
        self.action = "proxying"
        client.write(done.to_client)
        pipelined = self.machine.take_pipelined() + bytes(self.inbox)
        self.inbox.clear()
        self.relay = Relay(
            self.loop,
            client,
            backend,
            to_client_limit=self.server.proxy_buffer,
            to_backend_limit=_client_buffer(self.server),
            idle_timeout=self.server.proxy_timeout,
            on_done=self._relay_done,
        )
        self.relay.start(client_pipelined=pipelined)

    def _relay_done(self, reason: str) -> None:
        self.accounting.relay_ended(reason)
        if reason:
            self.info(reason)
        self.action = None
        self.info("proxied session done")
        self.close()

    # -- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """End the session now: every socket, timer and pending request."""
        if self.closed:
            return
        self.closed = True
        self.accounting.because(CloseReason.SHUTDOWN)  # nothing said why: closed from outside
        self._disarm_timeout()
        if self._cancel_lookup is not None:
            self._cancel_lookup()
            self._cancel_lookup = None
        if self.relay is not None and not self.relay.done:
            self.relay.finish("shutdown")
        self._stop_header()
        self.upstream_login.release()
        if self.stream is None:
            self.sock.close()
        elif not self.stream.closed:
            if self.stream.write_buffer_size > 0:
                # The final line closes the stream once sent; a client that never reads
                # must not keep the socket forever.
                self.loop.call_later(FINAL_LINE_GRACE, self.stream.close)
            else:
                self.stream.close()
        self.loop.untrack(self)
        relayed = self.upstream_login.backend if self.relay is not None else None
        self.accounting.closed(
            self.factory.access_logs,
            (self.client_addr, self.client_port),
            self.upstream,
            self.stream,
            relayed,
        )
