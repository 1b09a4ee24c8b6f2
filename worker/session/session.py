"""One client connection, from accept to close: nginx's mail session.

The session is glue: the protocol machine decides every byte the client sees, ``auth_http``
and ``backend`` decide what is said to the auth server and the backend, ``stream`` and
``relay`` move the bytes. What lives here is the order of the phases and their timers:

    [PROXY header] -> [TLS handshake] -> [SMTP: client name, greeting delay] -> greeting
    -> commands (STARTTLS, auth exchanges) -> auth_http (or proxy_pass) -> backend login
    -> relay

The client's bytes are read into a small inbox and fed to the machine no faster than its
``read_size()``, so the command buffer never exceeds its cap; reading pauses while the
inbox holds bytes the machine cannot take, and while the auth server or backend is asked.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker.auth_http.client import AuthClient, AuthOutcome, TransportError
from mailgate.worker.auth_http.request import UNAVAILABLE, AuthRequest, ClientTls
from mailgate.worker.auth_http.response import AuthWait, Fail, Invalid, Ok
from mailgate.worker.backend import login
from mailgate.worker.io.connect import Connector, describe
from mailgate.worker.io.loop import Loop, Timer
from mailgate.worker.io.relay import Relay
from mailgate.worker.io.stream import Stream, socket_family
from mailgate.worker.observe import metrics as worker_metrics
from mailgate.worker.observe.access_log import AccessLogs, CloseReason, Resumed, SessionRecord
from mailgate.worker.protocols import (
    MACHINES,
    NEED_DATA,
    PAUSED,
    Close,
    Credentials,
    Login,
    Phase,
    Send,
    StartTLS,
    replies,
)
from mailgate.worker.proxy_protocol import codec
from mailgate.worker.resolver.client import Resolver
from mailgate.worker.sansio import log_text
from mailgate.worker.tls import client_cert

if TYPE_CHECKING:  # at run time the master builds them after native.check() (cli.Paths.build)
    from mailgate.worker.tls.context import Contexts

# A proxy sends its header with the connection: a client still sending one after this long is
# not a proxy that nginx's ``timeout`` (60 s by default) should wait for.
PROXY_HEADER_TIMEOUT = 5.0
POP3_CLIENT_BUFFER = 128  # nginx's fixed POP3 command buffer
FINAL_LINE_GRACE = 5.0  # seconds a closing session may spend writing its last line
# The ``kind`` label of mailgate_tls_handshakes_total; "unknown" for a failed handshake.
HANDSHAKE_KINDS = {Resumed.NO: "full", Resumed.SESSION_ID: "session_id", Resumed.TICKET: "ticket"}
UNKNOWN = "unknown"
AUTH_HTTP_OUTCOMES: dict[type, str] = {
    Ok: "ok",
    Fail: "fail",
    AuthWait: "wait",
    Invalid: "invalid",
    TransportError: "error",
}
# The refusal of a login whose user name or password holds CR, LF or NUL: the text an auth
# server usually gives (nginx's documentation uses it), after the protocol's failure prefix.
UNSAFE_CREDENTIALS = b"Invalid login or password"
# Auth-Status: WAIT without (or with a zero) Auth-Wait is asked again after this long, and a
# login gives up after this many WAIT answers.
MIN_AUTH_WAIT = 1.0
MAX_AUTH_WAITS = 10
INFO_LEVEL = 7  # nginx's (and master.log.Level's) number for info

# A backend that answers the login with an error: the credentials were refused (not a fault).
BACKEND_REFUSED = "upstream sent invalid response"


class SessionLog(TypingProtocol):
    """The error log as a session uses it."""

    def error(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...


class ClientNames(TypingProtocol):
    """The SMTP client-name lookup (``resolver``); ``on_done(host, log_line or None)``."""

    def client_host(
        self,
        address: str,
        on_done: Callable[[str, str | None], None],
        timeout: float | None = None,
    ) -> Callable[[], None]: ...


class SessionFactory:
    """The worker's connection handler: makes a :class:`Session` per accepted socket."""

    def __init__(
        self,
        config: model.Config,
        log: SessionLog,
        contexts: Contexts,
        *,
        server_logs: Mapping[int, SessionLog] | None = None,
    ) -> None:
        """``server_logs``: the error log of each server that has its own, by index into
        ``config.servers``; as nginx's ``ngx_set_connection_log``, it replaces ``log`` for
        that server's sessions."""
        self.log = log
        self._resolvers: dict[tuple[object, ...], ClientNames] = {}
        self.contexts = contexts
        self._numbers = 0
        # Hot path: info lines (two to four per session) and their nginx-style context are
        # built only when some target of the session's error_log takes info.
        self.info_enabled = _takes_info(log)
        # Keyed by the server object itself, as the contexts: (its log, whether it takes info).
        own = server_logs or {}
        self._logs: dict[int, tuple[SessionLog, bool]] = {
            id(server): (own[index], _takes_info(own[index]))
            for index, server in enumerate(config.servers)
            if index in own
        }
        self.access_logs = AccessLogs(config.servers, log)
        # Bound here, before fork, so every worker starts with its listeners' series at 0.
        self._metrics: dict[int, worker_metrics.ListenerMetrics] = {}
        for server in config.servers:
            for listen in server.listens:
                self.listener_metrics(listen, server)

    def __call__(
        self,
        sock: socket.socket,
        peer: Any,
        listen: model.Listen,
        server: model.ServerConfig,
        loop: Loop,
    ) -> None:
        self._numbers += 1
        Session(self, self._numbers, sock, peer, listen=listen, server=server, loop=loop)

    def log_for(self, server: model.ServerConfig) -> tuple[SessionLog, bool]:
        """The error log of ``server``'s sessions, and whether it takes info lines."""
        return self._logs.get(id(server)) or (self.log, self.info_enabled)

    def context(self, server: model.ServerConfig) -> SSL.Context | None:
        return self.contexts.for_server(server)

    def listener_metrics(
        self, listen: model.Listen, server: model.ServerConfig
    ) -> worker_metrics.ListenerMetrics:
        """The listener's metric children, found by the ``Listen`` object (no formatting)."""
        found = self._metrics.get(id(listen))
        if found is None:
            found = worker_metrics.for_listener(listen.text, server.protocol.value)
            self._metrics[id(listen)] = found
        return found

    def open_logs(self) -> None:
        """Open the access logs now: in a new worker, before it drops privileges."""
        self.access_logs.open_all()

    def reopen(self) -> None:
        """USR1: reopen the access logs (the worker reopens its error log itself)."""
        self.access_logs.reopen()

    def resolver(self, server: model.ServerConfig, loop: Loop) -> ClientNames | None:
        """The worker's resolver for this server's ``resolver`` settings (None: off).

        Servers with the same settings share one, and so its cache, as nginx's do."""
        if not server.resolver:
            return None
        key = (server.resolver, server.resolver_valid, server.resolver_ipv4, server.resolver_ipv6)
        if key not in self._resolvers:
            self._resolvers[key] = Resolver.from_config(loop, server)
        return self._resolvers[key]


def _takes_info(log: SessionLog) -> bool:
    # A log without ``enabled`` (a test double) takes everything.
    enabled = getattr(log, "enabled", None)
    return enabled is None or bool(enabled(INFO_LEVEL))


def _client_buffer(server: model.ServerConfig) -> int:
    sizes = {
        model.Protocol.IMAP: server.imap_client_buffer,
        model.Protocol.POP3: POP3_CLIENT_BUFFER,
        model.Protocol.SMTP: server.smtp_client_buffer,
    }
    return sizes[server.protocol]


def _unsafe_for_lines(*values: bytes) -> bool:
    """CR, LF or NUL: bytes no backend login line may carry (a CR or LF would start another
    command, a NUL cuts an AUTH PLAIN token or a C string short)."""
    return any(octet in value for value in values for octet in (b"\r", b"\n", b"\0"))


def _peer(sock: socket.socket, peer: Any) -> tuple[str, int]:
    """``(host, port)`` from the address ``accept()`` returned; ``("unix:", 0)`` for UNIX."""
    if socket_family(sock) == socket.AF_UNIX:
        return "unix:", 0
    return peer[0], peer[1]


def _resumed(stream: Stream, server: model.ServerConfig) -> Resumed:
    """Full handshake, or which resumption.

    OpenSSL keeps no per-connection note of it, so this reads the settings: TLS 1.3
    resumes statelessly (a ticket) exactly when tickets are on, otherwise from the cache by
    session ID; TLS 1.2 with tickets on counts as a ticket, because a client that was given
    one offers it first (a client without ticket support, resuming by ID on a server that
    also has a cache, is counted as a ticket too).
    """
    if not stream.tls_resumed:
        return Resumed.NO
    return Resumed.TICKET if server.ssl_session_tickets else Resumed.SESSION_ID


def _sni(stream: Stream) -> str | None:
    name = stream.tls_server_name
    return None if not name else name.decode("ascii", "backslashreplace")


def _local(sock: socket.socket) -> tuple[str, int]:
    if socket_family(sock) == socket.AF_UNIX:
        return "unix:", 0
    host, port = sock.getsockname()[:2]
    return host, port


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
        self.sock = sock
        self.listen = listen
        self.server = server
        self.loop = loop
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
        self.backend: Stream | None = None
        self.relay: Relay | None = None
        self.inbox = bytearray()
        self.attempt = 0
        self._auth: AuthClient | None = None
        self._connector: Connector | None = None
        self._login_machine: login.BackendLogin | None = None
        self._credentials: Credentials | None = None
        self._cancel_lookup: Callable[[], None] | None = None
        self._timer: Timer | None = None
        self._deadline = 0.0
        self._reading_watch = False
        self._proxy_buf = bytearray()  # the part of a PROXY header consumed so far
        self._blocked = False  # replies to the client are unsent: commands wait (back-pressure)
        self._auth_waits = 0  # Auth-Status: WAIT rounds so far
        self._auth_retry: Timer | None = None
        # Observability: the access-log record, the listener's metrics, and what they time.
        self.record = SessionRecord(
            time.time(), self.client_addr, self.client_port, listen.text, server.protocol.value
        )
        self.metrics = factory.listener_metrics(listen, server)
        self.metrics.accepted()
        self.close_reason: CloseReason | None = None
        self._started = time.monotonic()
        self._tls_started: float | None = None  # a handshake is running since then
        self._auth_started: float | None = None  # an auth_http request is out since then
        self._relay_base = (0, 0)  # backend bytes (out, in) when the relay started
        self._client_eof = False
        self.machine = MACHINES[server.protocol](server, tls=listen.ssl)
        loop.track(self)
        if self._info_enabled:
            self.log.info(
                f"*{number} client {self.client_addr}:{self.client_port} connected to {listen.text}"
            )
        if listen.proxy_protocol:
            self._arm_timeout(min(server.timeout, PROXY_HEADER_TIMEOUT))
            self._watch_proxy_header()
        else:
            self._arm_timeout(server.timeout)
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

    def _info(self, message: str) -> None:
        if not self._info_enabled:
            return  # hot path: the context string is the costly part, and nobody reads it
        self.log.info(f"*{self.number} {message}{self._context()}")

    def _error(self, message: str) -> None:
        self.log.error(f"*{self.number} {message}{self._context()}")

    # -- timers -----------------------------------------------------------------------------

    def _arm_timeout(self, seconds: float) -> None:
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
        if self._login_machine is not None or self._connector is not None:
            if self._connector is not None:
                self.metrics.backend_connect_failed()
            self._backend_failed(login.upstream_timed_out(self.server.protocol))
            return
        self._info("client timed out")
        self._because(CloseReason.TIMEOUT)
        self.close()

    # -- PROXY protocol header (read before anything else, with MSG_PEEK as nginx) -----------

    def _watch_proxy_header(self) -> None:
        self.loop.selector.register(self.sock, 1, self._peek_proxy_header)
        self._reading_watch = True

    def _unwatch(self) -> None:
        if self._reading_watch:
            self.loop.selector.unregister(self.sock)
            self._reading_watch = False

    def _peek_proxy_header(self, _mask: int = 0) -> None:
        """Read the header without reading past it: peek, and consume what was peeked.

        While the header is incomplete every byte seen so far belongs to it (a v1 header ends
        at its first LF, a v2 header at the length it announced), so those bytes are taken
        out of the socket into a capped buffer: the socket then stays quiet until more
        arrive, instead of readable with bytes that cannot be parsed yet. Once complete,
        exactly the rest of the header is consumed; what follows is the client's.
        """
        room = codec.MAX_HEADER - len(self._proxy_buf)
        try:
            data = self.sock.recv(room, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as err:
            self._info(f"recv() failed ({err.errno}: {err.strerror})")
            self._because(CloseReason.CLIENT_CLOSED)
            self.close()
            return
        if not data:
            self._info("client closed connection")
            self._because(CloseReason.CLIENT_CLOSED)
            self.close()
            return
        seen = bytes(self._proxy_buf) + data
        result = codec.parse_proxy_header(seen)
        if result is NEED_DATA:
            # Bounded: the parser refuses a v1 line past 107 bytes and a v2 header past
            # MAX_HEADER, so an incomplete header is always shorter than that.
            self.sock.recv(len(data))
            self._proxy_buf += data
            return
        if isinstance(result, codec.BrokenHeader):
            if result.log_message:
                self._error(result.log_message)
            self._because(CloseReason.PROXY_PROTOCOL)
            self.close()
            return
        self._unwatch()
        self.sock.recv(result.length - len(self._proxy_buf))  # exactly the rest of the header
        self._proxy_buf = bytearray()
        self.proxy = result.info
        if result.info is not None and self._trusted_proxy():
            self._take_real_address(result.info)
        self._arm_timeout(self.server.timeout)
        self._start_stream()

    def _take_real_address(self, info: codec.ProxyInfo) -> None:
        """realip: the header's source replaces the peer, unless it is no IP address (as
        nginx, which keeps the connection's own address then)."""
        try:
            ipaddress.ip_address(info.src_addr)
        except ValueError:
            self._info(f'PROXY protocol source "{log_text(info.src_addr.encode())}" ignored')
            return
        self.client_addr, self.client_port = info.src_addr, info.src_port

    def _trusted_proxy(self) -> bool:
        """``set_real_ip_from``: only a listed peer may replace the client address."""
        if self.client_addr == "unix:":
            return "unix:" in self.server.set_real_ip_from
        try:
            peer = ipaddress.ip_address(self.client_addr)
        except ValueError:
            return False
        # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; nginx matches those
        # against IPv4 networks too.
        mapped = peer.ipv4_mapped if isinstance(peer, ipaddress.IPv6Address) else None
        return any(
            not isinstance(net, str) and (peer in net or (mapped is not None and mapped in net))
            for net in self.server.set_real_ip_from
        )

    # -- client stream ------------------------------------------------------------------------

    def _start_stream(self) -> None:
        if self.closed:
            return
        self.stream = Stream(self.loop, self.sock, self)
        if self.listen.ssl:
            ctx = self.factory.context(self.server)
            assert ctx is not None, "a listen ... ssl server always has a context"
            self.action = "SSL handshaking"
            self._tls_started = time.monotonic()
            self.stream.start_tls(ctx)
        else:
            self._before_greeting()

    def data_received(self, data: bytes) -> None:
        if self._credentials is not None and self.relay is None:
            self._hold_during_login(data)
            return
        if self.machine.phase is Phase.GREETING:
            # Only an SMTP greeting delay lets the client talk first; the machine answers 503.
            shown = log_text(data[:128].replace(b"\r", b"_").replace(b"\n", b"_"))
            self._info(f'client was rejected before greeting: "{shown}"')
        self.inbox += data
        self._pump()

    def _hold_during_login(self, data: bytes) -> None:
        """While the auth server or the backend is asked, the client is still read, so that
        one that leaves ends the session; what it sends is held (up to its command buffer)
        for the backend or the next attempt, and reading stops when that is full."""
        self.inbox += data
        if len(self.inbox) >= _client_buffer(self.server):
            self._set_reading(False)

    def eof_received(self) -> None:
        self._client_eof = True
        self.machine.receive_data(b"")
        if self._credentials is not None and self.relay is None:
            self._info("client prematurely closed connection")
            self._because(CloseReason.CLIENT_CLOSED)
            self.close()
            return
        self._pump()

    def connection_lost(self, reason: str) -> None:
        self._info(reason)
        handshaking = self._tls_started is not None
        self._because(CloseReason.TLS_FAILED if handshaking else CloseReason.CLIENT_CLOSED)
        self.close()

    def tls_established(self) -> None:
        self._handshake_done()
        if not self._client_certificate_ok():
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

    def _client_certificate_ok(self) -> bool:
        """``ssl_verify_client``: nginx judges the certificate after the handshake."""
        if self.server.ssl_verify_client is model.VerifyClient.OFF:
            return True
        assert self.stream is not None and self.stream.tls is not None
        outcome = client_cert.verify_result(self.stream.tls, self.server)
        if not outcome.rejected:
            return True
        self._info(outcome.log)
        client_cert.remove_session(self.stream.tls)
        self._because(CloseReason.CERT_REJECTED)
        cert_error = outcome.reply is client_cert.VerifyReply.CERT_ERROR
        lines = replies.CERT_ERROR if cert_error else replies.NO_CERT
        self._send_and_close(lines[self.server.protocol])
        return False

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
            self._error(log_line)
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
            self._feed()
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
                self._arm_timeout(self.server.timeout)  # a command (or one of its lines) ended
                stream.write(event.data)
            elif isinstance(event, StartTLS):
                self._arm_timeout(self.server.timeout)
                self._start_tls(stream)
                return
            elif isinstance(event, Login):
                if _unsafe_for_lines(event.credentials.user, event.credentials.password):
                    stream.write(self._refuse_unsafe(event.credentials))
                    continue
                self._set_reading(len(self.inbox) < _client_buffer(self.server))
                self._start_login(event.credentials)
                return
            elif isinstance(event, Close):
                self._because(CloseReason.CLIENT_CLOSED if self._client_eof else CloseReason.QUIT)
                self._finish_with_flush()
                return

    def _feed(self) -> None:
        room = self.machine.read_size()
        if self.inbox and room:
            chunk = bytes(self.inbox[:room])
            del self.inbox[:room]
            self.machine.receive_data(chunk)

    def _set_reading(self, on: bool) -> None:
        if self.stream is None:
            return
        if on:
            self.stream.resume_reading()
        else:
            self.stream.pause_reading()

    def _start_tls(self, stream: Stream) -> None:
        # Whatever the client pipelined after STARTTLS is never read as commands over TLS.
        self.inbox.clear()
        ctx = self.factory.context(self.server)
        assert ctx is not None, "STARTTLS is only offered with a context"
        self.action = "in starttls state"
        self._tls_started = time.monotonic()
        stream.start_tls(ctx)

    def _finish_with_flush(self) -> None:
        if self.stream is not None:
            self.stream.close_after_flush()
        self.close()

    # -- auth -----------------------------------------------------------------------------------

    def _start_login(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self.login = credentials.user
        self.record.login = credentials.user
        self._disarm_timeout()
        target = self.server.proxy_pass
        if target is not None:
            self._auth_done(
                Ok(
                    target.host,
                    target.port,
                    credentials.user,
                    credentials.password,
                    describe((target.host, target.port)),
                )
            )
            return
        self._ask_auth_server()

    def _refuse_unsafe(self, credentials: Credentials) -> bytes:
        """The failure line for credentials with CR, LF or NUL, refused before anyone is
        asked: nginx would write them verbatim into the backend's login lines, and no real
        account has them. The machine is back in its command state, ready for another try."""
        self.login = credentials.user
        self._info("client sent a login or password with CR, LF or NUL")
        self.login = None
        self.metrics.login(credentials.method, worker_metrics.FAILED)
        self.record.auth = worker_metrics.FAILED
        self._arm_timeout(self.server.timeout)
        return self.machine.login_failed(UNSAFE_CREDENTIALS)

    def _ask_auth_server(self) -> None:
        credentials = self._credentials
        assert credentials is not None
        self.action = "in http auth state"
        request = AuthRequest(
            protocol=self.server.protocol,
            method=credentials.method,
            user=credentials.user,
            password=credentials.password,
            client_ip=self.client_addr,
            login_attempt=credentials.attempt,
            salt=(credentials.salt or b"").removesuffix(b"\r\n"),
            client_host=self.client_host if self.server.protocol is model.Protocol.SMTP else None,
            proxy=self.proxy,
            smtp_helo=credentials.helo,
            smtp_from=credentials.mail_from,
            smtp_to=credentials.rcpt_to,
            tls=self._client_tls(),
        )
        self._auth_started = time.monotonic()
        self._auth = AuthClient(self.loop, self.server, request, self._auth_done)

    def _client_tls(self) -> ClientTls | None:
        conn = self.stream.tls if self.stream is not None else None
        return None if conn is None else client_cert.client_tls(conn, self.server)

    def _auth_done(self, outcome: AuthOutcome) -> None:
        self._auth = None
        if self._auth_started is not None:  # an auth_http answer, not proxy_pass
            seconds = time.monotonic() - self._auth_started
            self._auth_started = None
            worker_metrics.auth_http(AUTH_HTTP_OUTCOMES[type(outcome)], seconds)
        if self.closed:
            return
        if isinstance(outcome, Ok):
            self._connect_backend(outcome)
        elif isinstance(outcome, AuthWait):
            self._wait_for_auth_server(outcome)
        elif isinstance(outcome, Fail):
            self._login_counted(worker_metrics.FAILED)
            self._login_refused(outcome)
        elif isinstance(outcome, Invalid | TransportError):
            if outcome.log_message:
                self._error(outcome.log_message)
            self._login_counted(worker_metrics.ERROR)
            self._because(CloseReason.AUTH_ERROR)
            self._internal_error()

    def _wait_for_auth_server(self, wait: AuthWait) -> None:
        """``Auth-Status: WAIT``: ask again later, at least MIN_AUTH_WAIT later (nginx asks at
        once without Auth-Wait, so a broken auth server would be asked in a loop), at most
        MAX_AUTH_WAITS times per login."""
        self._auth_waits += 1
        if self._auth_waits >= MAX_AUTH_WAITS:
            self._error(f"auth http server asked to wait {MAX_AUTH_WAITS} times")
            self._login_counted(worker_metrics.ERROR)
            self._because(CloseReason.AUTH_ERROR)
            self._internal_error()
            return
        seconds = max(wait.seconds, MIN_AUTH_WAIT)
        self._auth_retry = self.loop.call_later(seconds, self._retry_auth)

    def _retry_auth(self) -> None:
        self._auth_retry = None
        if not self.closed:
            self._ask_auth_server()

    def _login_refused(self, fail: Fail) -> None:
        self._info(fail.log_message)
        if fail.closes_session:
            self._because(CloseReason.AUTH_FAILED)
            self._send_and_close(self.machine.login_failed(fail.message, fail.error_code))
            return
        # nginx waits Auth-Wait seconds *before* answering, then lets the client try again.
        self.loop.call_later(fail.wait, lambda: self._answer_refusal(fail))

    def _answer_refusal(self, fail: Fail) -> None:
        if self.closed or self.stream is None:
            return
        self.action = "in auth state"
        self.login = None
        self._credentials = None
        self._auth_waits = 0
        self.stream.write(self.machine.login_failed(fail.message, fail.error_code))
        self._arm_timeout(self.server.timeout)
        self._pump()

    def _internal_error(self) -> None:
        self._send_and_close(self.machine.internal_error())

    def _send_and_close(self, line: bytes) -> None:
        if self.stream is not None:
            self.stream.write(line)
        self._finish_with_flush()

    # -- backend login ------------------------------------------------------------------------

    def _connect_backend(self, ok: Ok) -> None:
        credentials = self._credentials
        assert credentials is not None
        if ok.password is None and self.server.protocol is not model.Protocol.SMTP:
            self._error("no password available for the backend")
            self._login_counted(worker_metrics.ERROR)
            self._because(CloseReason.INTERNAL_ERROR)
            self._internal_error()
            return
        self.login = ok.user
        self.upstream = ok.peer_name
        if _unsafe_for_lines(ok.user, ok.password or b""):
            # The client's were checked before asking; these came from the auth server.
            self._error("auth http server sent a login or password with CR, LF or NUL")
            self._login_counted(worker_metrics.ERROR)
            self._because(CloseReason.INTERNAL_ERROR)
            self._internal_error()
            return
        self.action = "connecting to upstream"
        self._login_machine = self._backend_login(ok, credentials)
        self._arm_timeout(self.server.timeout)
        self._connector = Connector(
            self.loop, (ok.server, ok.port), self.server.timeout, self._backend_connected
        )

    def _backend_login(self, ok: Ok, credentials: Credentials) -> login.BackendLogin:
        options = login.BackendOptions.from_config(self.server, self._proxy_preamble())
        if self.server.proxy_pass is not None:
            # A static route has no auth server: the backend judges the password, so its
            # refusal is the client's failed login, not an internal error.
            options = dataclasses.replace(options, pass_error_message=True)
        password = ok.password or b""
        if self.server.protocol is model.Protocol.IMAP:
            return login.ImapBackendLogin(credentials.tag.rstrip(b" "), ok.user, password, options)
        if self.server.protocol is model.Protocol.POP3:
            return login.Pop3BackendLogin(ok.user, password, options)
        none = credentials.method == "none"
        client = login.SmtpClient(
            addr=self.client_addr,
            host=self.client_host,
            helo=credentials.helo,
            esmtp=credentials.esmtp,
            mail_from=credentials.mail_from if none else None,
            rcpt_to=credentials.rcpt_to if none else None,
        )
        return login.SmtpBackendLogin(
            server_name=self.server.server_name,
            client=client,
            user=b"" if none else ok.user,
            password=ok.password,
            xclient=self.server.xclient,
            proxy_smtp_auth=self.server.proxy_smtp_auth,
            options=options,
        )

    def _proxy_preamble(self) -> bytes:
        """The PROXY header for ``proxy_protocol on|v2`` towards the login."""
        mode = self.server.proxy_protocol
        if mode is model.ProxyProtocolOut.OFF:
            return b""
        client = (self.client_addr, self.client_port)
        local = _local(self.sock)
        if mode is model.ProxyProtocolOut.V1:
            return codec.build_v1(client, local)
        conn = self.stream.tls if self.stream is not None else None
        tlvs = None
        if conn is not None:
            version, cipher = client_cert.tls_summary(conn)
            tlvs = codec.TlsTlvs(version, cipher, alpn=conn.get_alpn_proto_negotiated())
        return codec.build_v2(client, local, tlvs)

    def _backend_connected(self, sock: socket.socket | None, error: str) -> None:
        self._connector = None
        if self.closed:
            if sock is not None:
                sock.close()
            return
        if sock is None:
            self.metrics.backend_connect_failed()
            self._backend_failed(
                login.Failed(self.machine.internal_error(), login.LogLine("error", error))
            )
            return
        self.action = "in upstream auth state"
        self.backend = Stream(self.loop, sock, _BackendLoginHandler(self))
        self._drive_backend()

    def backend_data(self, data: bytes) -> None:
        assert self._login_machine is not None
        self._login_machine.receive_data(data)
        self._drive_backend()

    def _drive_backend(self) -> None:
        machine, stream = self._login_machine, self.backend
        while machine is not None and stream is not None and not self.closed:
            event = machine.next_event()
            if event is NEED_DATA:
                # A backend that talks past its reply waits in its socket (nginx's bytes
                # "still in the socket"): the login machine holds at most proxy_buffer more.
                if machine.full:
                    stream.pause_reading()
                else:
                    stream.resume_reading()
                return
            if isinstance(event, login.BackendSend):
                stream.write(event.data)
            elif isinstance(event, login.Done):
                self._logged_in(event)
                return
            else:
                self._backend_failed(event)
                return

    def _backend_failed(self, failed: login.Failed) -> None:
        if failed.log is not None:
            log = self._error if failed.log.level == "error" else self._info
            log(failed.log.message)
        # Only ever called during the backend login: the relay has handlers of its own.
        refused = failed.log is not None and failed.log.message.startswith(BACKEND_REFUSED)
        self._login_counted(worker_metrics.FAILED if refused else worker_metrics.ERROR)
        self._because(CloseReason.BACKEND_FAILED if refused else CloseReason.BACKEND_ERROR)
        self._login_machine = None
        self._send_and_close(failed.reply)

    def _logged_in(self, done: login.Done) -> None:
        client, upstream = self.stream, self.backend
        assert client is not None and upstream is not None
        self._login_machine = None
        self._disarm_timeout()
        self._login_counted(worker_metrics.OK)
        self._relay_base = (upstream.bytes_out, upstream.bytes_in)
        self.action = None
        self._info("client logged in")
        self.action = "proxying"
        client.write(done.to_client)
        pipelined = self.machine.take_pipelined() + bytes(self.inbox)
        self.inbox.clear()
        self.relay = Relay(
            self.loop,
            client,
            upstream,
            to_client_limit=self.server.proxy_buffer,
            to_backend_limit=_client_buffer(self.server),
            idle_timeout=self.server.proxy_timeout,
            on_done=self._relay_done,
        )
        self.relay.start(client_pipelined=pipelined)

    def _relay_done(self, reason: str) -> None:
        if not reason:
            self._because(CloseReason.PROXIED)
        elif reason == "timed out":
            self._because(CloseReason.TIMEOUT)
        else:
            self._because(CloseReason.RELAY_ERROR)
        if reason:
            self._info(reason)
        self.action = None
        self._info("proxied session done")
        self.close()

    # -- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """End the session now: every socket, timer and pending request."""
        if self.closed:
            return
        self.closed = True
        self._because(CloseReason.SHUTDOWN)  # nothing said why: closed from outside
        self._disarm_timeout()
        if self._cancel_lookup is not None:
            self._cancel_lookup()
            self._cancel_lookup = None
        if self._auth is not None:
            self._auth.cancel()
            self._auth = None
        if self._auth_retry is not None:
            self.loop.cancel(self._auth_retry)
            self._auth_retry = None
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        if self.relay is not None and not self.relay.done:
            self.relay.finish("shutdown")
        self._unwatch()
        if self.backend is not None:
            self.backend.close()
        if self.stream is None:
            self.sock.close()
        elif not self.stream.closed:
            if self._flushing():
                # The final line closes the stream once sent; a client that never reads
                # must not keep the socket forever.
                self.loop.call_later(FINAL_LINE_GRACE, self.stream.close)
            else:
                self.stream.close()
        self.loop.untrack(self)
        self._account()

    # -- observability ------------------------------------------------------------------------

    def _because(self, reason: CloseReason) -> None:
        """Note why the session ends; the first reason given wins."""
        if self.close_reason is None:
            self.close_reason = reason

    def _handshake_done(self) -> None:
        stream = self.stream
        if stream is None or self._tls_started is None:
            return
        seconds = time.monotonic() - self._tls_started
        self._tls_started = None
        rec = self.record
        rec.tls_version = stream.tls_version
        rec.cipher = stream.tls_cipher or None
        rec.resumed = _resumed(stream, self.server)
        rec.handshake = seconds
        rec.sni = _sni(stream)
        self.metrics.handshake(True, rec.tls_version, HANDSHAKE_KINDS[rec.resumed], seconds)

    def _login_counted(self, outcome: str) -> None:
        """One login attempt ended: ok (relaying), failed (refused) or error."""
        credentials = self._credentials
        if credentials is None:
            return
        self.metrics.login(credentials.method, outcome)
        self.record.auth = outcome

    def _account(self) -> None:
        """At close: the failed handshake, relayed bytes, the close reason, the access log."""
        if self._tls_started is not None:
            self._tls_started = None
            self.metrics.handshake(False, UNKNOWN, UNKNOWN, None)
        if self.relay is not None and self.backend is not None:
            out_base, in_base = self._relay_base
            self.metrics.relayed(self.backend.bytes_out - out_base, self.backend.bytes_in - in_base)
        reason = self.close_reason or CloseReason.SHUTDOWN
        self.metrics.closed(reason.value)
        if not self.factory.access_logs.enabled(self.server):
            return
        rec = self.record
        rec.client_addr, rec.client_port = self.client_addr, self.client_port
        rec.upstream = self.upstream
        if self.stream is not None:
            rec.bytes_in, rec.bytes_out = self.stream.bytes_in, self.stream.bytes_out
        rec.duration = time.monotonic() - self._started
        rec.reason = reason
        self.factory.access_logs.write(self.server, rec)

    def _flushing(self) -> bool:
        """A final line is still being written; the stream closes itself when it is sent."""
        return self.stream is not None and self.stream.write_buffer_size > 0


class _BackendLoginHandler:
    """The backend stream's handler until the relay takes over."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def data_received(self, data: bytes) -> None:
        self.session.backend_data(data)

    def eof_received(self) -> None:
        self.session.backend_data(b"")

    def connection_lost(self, reason: str) -> None:
        self.session._backend_failed(
            login.Failed(
                self.session.machine.internal_error(),
                login.LogLine("error", reason),
            )
        )

    def tls_established(self) -> None:
        """Never called: there is no TLS towards backends (as nginx)."""

    def write_drained(self) -> None:
        """Nothing to resume: the login machine sends one command per reply."""
