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
from typing import TYPE_CHECKING

from mailgate.config import model
from mailgate.worker.auth_http.request import UNAVAILABLE
from mailgate.worker.backend import login
from mailgate.worker.io.loop import Loop, Timer
from mailgate.worker.io.relay import Relay
from mailgate.worker.io.stream import Stream
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
from mailgate.worker.session import greeting
from mailgate.worker.session.accounting import Accounting
from mailgate.worker.session.greeting import BeforeGreeting
from mailgate.worker.session.log import ContextLog
from mailgate.worker.session.upstream import UpstreamLogin
from mailgate.worker.tls import client_cert

if TYPE_CHECKING:  # the factory makes sessions: only a type here, not an import cycle
    from mailgate.worker.session.factory import SessionFactory

FINAL_LINE_GRACE = 5.0  # seconds a closing session may spend writing its last line


class Session:
    """A client connection and everything it opens (auth request, backend, relay)."""

    def __init__(
        self,
        factory: SessionFactory,
        number: int,
        sock: socket.socket,
        client: tuple[str, int],
        *,
        listen: model.Listen,
        server: model.ServerConfig,
        loop: Loop,
    ) -> None:
        self.factory = factory
        log, info_enabled = factory.log_for(server)
        self._log = ContextLog(log, info_enabled, number, self)
        self.sock, self.listen, self.server, self.loop = sock, listen, server, loop
        self.client_addr, self.client_port = client
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
        self._client_buffer = factory.client_buffer(server)  # what the inbox may hold
        self._timer: Timer | None = None
        self._deadline = 0.0
        self._header: reader.HeaderWatch | None = None  # reading a PROXY header
        self._blocked = False  # replies to the client are unsent: commands wait (back-pressure)
        self._client_eof = False
        self.accounting = Accounting(
            factory.listener_metrics(listen, server), client, listen, server
        )
        # Made when first needed: most connections never log in, and only SMTP looks up the
        # client's name before the greeting (a per-connection cost on the hot path).
        self._greeting: BeforeGreeting | None = None
        self._upstream: UpstreamLogin | None = None
        self.machine = MACHINES[server.protocol](server, tls=listen.ssl)
        loop.track(self)
        if info_enabled:
            log.info(f"*{number} client {client[0]}:{client[1]} connected to {listen.text}")
        if listen.proxy_protocol:
            self.arm_timeout(min(server.timeout, reader.HEADER_TIMEOUT))
            self._header = reader.HeaderWatch(loop.selector, sock, self._proxy_header_read)
        else:
            self.arm_timeout(server.timeout)
            self._start_stream()

    def info(self, message: str) -> None:
        self._log.info(message)

    def error(self, message: str) -> None:
        self._log.error(message)

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
        if self._upstream is not None and self._upstream.at_backend:
            self._upstream.timed_out()
            return
        self.info("client timed out")
        self._close_because(CloseReason.TIMEOUT)

    # -- PROXY protocol header (read before anything else, with MSG_PEEK as nginx) -----------

    def _proxy_header_read(self, result: codec.ProxyHeader | reader.Failed) -> None:
        self._header = None
        if isinstance(result, reader.Failed):
            if result.log_message:
                (self.error if result.broken else self.info)(result.log_message)
            broken = result.broken
            self._close_because(CloseReason.PROXY_PROTOCOL if broken else CloseReason.CLIENT_CLOSED)
            return
        self.proxy = result.info
        peer = (self.client_addr, self.client_port)
        address, note = reader.client_address(result.info, peer, self.server.set_real_ip_from)
        if note:
            self.info(note)
        self.client_addr, self.client_port = address
        self.arm_timeout(self.server.timeout)
        self._start_stream()

    # -- client stream ------------------------------------------------------------------------

    def _start_stream(self) -> None:
        if self.closed:
            return
        self.stream = Stream(self.loop, self.sock, self)
        if self.listen.ssl:
            self.action = "SSL handshaking"
            self._start_tls(self.stream)
        else:
            self._greeting = greeting.begin(self, self.factory.resolver)

    def data_received(self, data: bytes) -> None:
        if self._logging_in:
            # While the auth server or the backend is asked, the client is still read, so that
            # one that leaves ends the session; what it sends is held (up to its command
            # buffer) for the backend or the next attempt, and reading stops when that is full.
            self.inbox += data
            if len(self.inbox) >= self._client_buffer:
                self._set_reading(False)
            return
        if self.machine.phase is Phase.GREETING:
            # Only an SMTP greeting delay lets the client talk first; the machine answers 503.
            shown = log_text(data[:128].replace(b"\r", b"_").replace(b"\n", b"_"))
            self.info(f'client was rejected before greeting: "{shown}"')
        self.inbox += data
        self.pump()

    def eof_received(self) -> None:
        self._client_eof = True
        self.machine.receive_data(b"")
        if self._logging_in:
            self.info("client prematurely closed connection")
            self._close_because(CloseReason.CLIENT_CLOSED)
            return
        self.pump()

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
            self.pump()
            return
        self._greeting = greeting.begin(self, self.factory.resolver)

    @property
    def upstream_login(self) -> UpstreamLogin:
        """The auth and backend-login steps, made on the first login."""
        if self._upstream is None:
            self._upstream = UpstreamLogin(self)
        return self._upstream

    @property
    def _logging_in(self) -> bool:
        """The auth server or the backend is being asked (credentials given, no relay yet)."""
        upstream = self._upstream
        return upstream is not None and upstream.credentials is not None and self.relay is None

    def write_drained(self) -> None:
        if self._blocked:
            self._blocked = False
            self.pump()

    def greet(self) -> None:
        """Send the greeting (after ``greeting``'s lookup and delay) and read commands."""
        if self.closed or self.machine.phase is not Phase.GREETING:
            return
        assert self.stream is not None
        self.stream.write(self.machine.greeting())
        self.stream.resume_reading()
        self.pump()

    # -- commands -----------------------------------------------------------------------------

    def pump(self) -> None:
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
                self._set_reading(len(self.inbox) < self._client_buffer)
                self._disarm_timeout()
                self.upstream_login.start(event.credentials)
                return
            elif isinstance(event, Close):
                self.accounting.because(
                    CloseReason.CLIENT_CLOSED if self._client_eof else CloseReason.QUIT
                )
                self.send_and_close()
                return

    def _set_reading(self, on: bool) -> None:
        if self.stream is not None:
            (self.stream.resume_reading if on else self.stream.pause_reading)()

    def _start_tls(self, stream: Stream) -> None:
        ctx = self.factory.context(self.server)
        assert ctx is not None, "TLS is only started (or offered) on a server with a context"
        self.accounting.tls_started()
        stream.start_tls(ctx)

    def send_and_close(self, line: bytes = b"") -> None:
        """Write a final line (if any) to the client and close once it is sent."""
        if self.stream is not None:
            if line:
                self.stream.write(line)
            self.stream.close_after_flush()
        self.close()

    def _close_because(self, reason: CloseReason) -> None:
        self.accounting.because(reason)
        self.close()

    # -- after the backend login (called by ``upstream``) -------------------------------------

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
            to_backend_limit=self._client_buffer,
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
        if self._greeting is not None:
            self._greeting.cancel()
        if self.relay is not None and not self.relay.done:
            self.relay.finish("shutdown")
        if self._header is not None:
            self._header.stop()
        if self._upstream is not None:
            self._upstream.release()
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
        relayed = self._upstream.backend if self._upstream and self.relay is not None else None
        client = (self.client_addr, self.client_port)
        logs = self.factory.access_logs
        self.accounting.closed(logs, client, self.upstream, self.stream, relayed)
