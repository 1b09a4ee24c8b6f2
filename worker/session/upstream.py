"""The two steps between a client's login and the relay: whom to ask, and the backend login.

Auth step: ``auth_http`` is asked (``Auth-Status: WAIT`` asks again later) or ``proxy_pass``
names the backend outright. Backend step: connect, send the PROXY header if configured, and
drive the protocol's backend-login machine until the backend accepts or refuses. The session
only hears the end of it: :meth:`Conductor.logged_in`, a refusal the client may retry after
(then :meth:`Conductor.pump`), or a final line and a close.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any, Protocol

from mailgate.config import model
from mailgate.worker.auth_http.client import AuthClient, AuthOutcome, TransportError
from mailgate.worker.auth_http.request import AuthRequest, ClientTls
from mailgate.worker.auth_http.response import AuthWait, Fail, Invalid, Ok
from mailgate.worker.backend import login
from mailgate.worker.backend.login import Done
from mailgate.worker.io.connect import Connector, describe
from mailgate.worker.io.loop import Timer
from mailgate.worker.io.stream import Stream, socket_family
from mailgate.worker.observe import metrics as worker_metrics
from mailgate.worker.observe.access_log import CloseReason
from mailgate.worker.protocols import NEED_DATA, Credentials
from mailgate.worker.protocols.base import MailMachine
from mailgate.worker.proxy_protocol import codec
from mailgate.worker.session.accounting import Accounting
from mailgate.worker.session.greeting import Host
from mailgate.worker.tls import client_cert

# The refusal of a login whose user name or password holds CR, LF or NUL: the text an auth
# server usually gives (nginx's documentation uses it), after the protocol's failure prefix.
UNSAFE_CREDENTIALS = b"Invalid login or password"
# Auth-Status: WAIT without (or with a zero) Auth-Wait is asked again after this long, and a
# login gives up after this many WAIT answers.
MIN_AUTH_WAIT = 1.0
MAX_AUTH_WAITS = 10
# A backend that answers the login with an error: the credentials were refused (not a fault).
BACKEND_REFUSED = "upstream sent invalid response"


class Conductor(Host, Protocol):
    """What the login steps need of their session: what the greeting needs, and more."""

    login: bytes | None  # the user name in log lines
    upstream: str | None  # the backend in log lines

    @property
    def sock(self) -> socket.socket: ...
    @property
    def machine(self) -> MailMachine[Any]: ...
    @property
    def accounting(self) -> Accounting: ...
    @property
    def closed(self) -> bool: ...
    @property
    def client_port(self) -> int: ...
    @property
    def proxy(self) -> codec.ProxyInfo | None: ...

    def info(self, message: str) -> None: ...
    def arm_timeout(self, seconds: float) -> None: ...
    def send_and_close(self, line: bytes) -> None: ...
    def pump(self) -> None: ...
    def logged_in(self, done: Done, backend: Stream) -> None: ...


def unsafe_for_lines(*values: bytes) -> bool:
    """CR, LF or NUL: bytes no backend login line may carry (a CR or LF would start another
    command, a NUL cuts an AUTH PLAIN token or a C string short)."""
    return any(octet in value for value in values for octet in (b"\r", b"\n", b"\0"))


def _local(sock: socket.socket) -> tuple[str, int]:
    if socket_family(sock) == socket.AF_UNIX:
        return "unix:", 0
    host, port = sock.getsockname()[:2]
    return host, port


class UpstreamLogin:
    """One session's way from the client's credentials to a logged-in backend stream."""

    def __init__(self, session: Conductor) -> None:
        self.session = session
        self.credentials: Credentials | None = None  # a login is being carried out
        self.backend: Stream | None = None
        self._auth: AuthClient | None = None
        self._auth_retry: Timer | None = None
        self._auth_waits = 0  # Auth-Status: WAIT rounds so far
        self._connector: Connector | None = None
        self._machine: login.BackendLogin | None = None

    @property
    def at_backend(self) -> bool:
        """Connecting to the backend or logging in there: the phase timer is the backend's."""
        return self._machine is not None or self._connector is not None

    def refusal(self, credentials: Credentials) -> bytes | None:
        """The failure line for credentials with CR, LF or NUL, refused before anyone is
        asked: nginx would write them verbatim into the backend's login lines, and no real
        account has them. The machine is back in its command state, ready for another try.
        None: the credentials may be sent on."""
        if not unsafe_for_lines(credentials.user, credentials.password):
            return None
        session = self.session
        session.login = credentials.user
        session.info("client sent a login or password with CR, LF or NUL")
        session.login = None
        session.accounting.login(credentials.method, worker_metrics.FAILED)
        session.arm_timeout(session.server.timeout)
        return session.machine.login_failed(UNSAFE_CREDENTIALS)

    def start(self, credentials: Credentials) -> None:
        """The auth step: ``proxy_pass`` names the backend, else the auth server is asked."""
        self.credentials = credentials
        self.session.login = credentials.user
        self.session.accounting.record.login = credentials.user
        target = self.session.server.proxy_pass
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

    def release(self) -> None:
        """The session closes: cancel what is pending, close the backend stream."""
        if self._auth is not None:
            self._auth.cancel()
            self._auth = None
        if self._auth_retry is not None:
            self.session.loop.cancel(self._auth_retry)
            self._auth_retry = None
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        if self.backend is not None:
            self.backend.close()

    def close(self) -> None:
        """End the session (the loop calls this when one of our callbacks fails)."""
        self.session.close()

    # -- the auth step ------------------------------------------------------------------------

    def _ask_auth_server(self) -> None:
        credentials, session = self.credentials, self.session
        assert credentials is not None
        server = session.server
        session.action = "in http auth state"
        request = AuthRequest(
            protocol=server.protocol,
            method=credentials.method,
            user=credentials.user,
            password=credentials.password,
            client_ip=session.client_addr,
            login_attempt=credentials.attempt,
            salt=(credentials.salt or b"").removesuffix(b"\r\n"),
            client_host=session.client_host if server.protocol is model.Protocol.SMTP else None,
            proxy=session.proxy,
            smtp_helo=credentials.helo,
            smtp_from=credentials.mail_from,
            smtp_to=credentials.rcpt_to,
            tls=self._client_tls(),
        )
        session.accounting.auth_http_started()
        self._auth = AuthClient(session.loop, server, request, self._auth_done)

    def _client_tls(self) -> ClientTls | None:
        stream = self.session.stream
        conn = stream.tls if stream is not None else None
        return None if conn is None else client_cert.client_tls(conn, self.session.server)

    def _auth_done(self, outcome: AuthOutcome) -> None:
        self._auth = None
        self.session.accounting.auth_http_done(outcome)
        if self.session.closed:
            return
        if isinstance(outcome, Ok):
            self._connect_backend(outcome)
        elif isinstance(outcome, AuthWait):
            self._wait_for_auth_server(outcome)
        elif isinstance(outcome, Fail):
            self._counted(worker_metrics.FAILED)
            self._login_refused(outcome)
        elif isinstance(outcome, Invalid | TransportError):
            if outcome.log_message:
                self.session.error(outcome.log_message)
            self._internal_error(CloseReason.AUTH_ERROR)

    def _wait_for_auth_server(self, wait: AuthWait) -> None:
        """``Auth-Status: WAIT``: ask again later, at least MIN_AUTH_WAIT later (nginx asks at
        once without Auth-Wait, so a broken auth server would be asked in a loop), at most
        MAX_AUTH_WAITS times per login."""
        self._auth_waits += 1
        if self._auth_waits >= MAX_AUTH_WAITS:
            self.session.error(f"auth http server asked to wait {MAX_AUTH_WAITS} times")
            self._internal_error(CloseReason.AUTH_ERROR)
            return
        seconds = max(wait.seconds, MIN_AUTH_WAIT)
        self._auth_retry = self.session.loop.call_later(seconds, self._retry_auth)

    def _retry_auth(self) -> None:
        self._auth_retry = None
        if not self.session.closed:
            self._ask_auth_server()

    def _login_refused(self, fail: Fail) -> None:
        session = self.session
        session.info(fail.log_message)
        if fail.closes_session:
            session.accounting.because(CloseReason.AUTH_FAILED)
            session.send_and_close(session.machine.login_failed(fail.message, fail.error_code))
            return
        # nginx waits Auth-Wait seconds *before* answering, then lets the client try again.
        session.loop.call_later(fail.wait, lambda: self._answer_refusal(fail))

    def _answer_refusal(self, fail: Fail) -> None:
        """The refusal after Auth-Wait: the client is back in its command state."""
        session = self.session
        if session.closed or session.stream is None:
            return
        session.action = "in auth state"
        session.login = None
        self.credentials = None
        self._auth_waits = 0
        session.stream.write(session.machine.login_failed(fail.message, fail.error_code))
        session.arm_timeout(session.server.timeout)
        session.pump()

    def _counted(self, outcome: str) -> None:
        if self.credentials is not None:
            self.session.accounting.login(self.credentials.method, outcome)

    def _internal_error(self, reason: CloseReason) -> None:
        """The login ends in an error of ours or the auth server's, not a refusal."""
        self._counted(worker_metrics.ERROR)
        self.session.accounting.because(reason)
        self.session.send_and_close(self.session.machine.internal_error())

    # -- the backend step ---------------------------------------------------------------------

    def _connect_backend(self, ok: Ok) -> None:
        credentials, session = self.credentials, self.session
        assert credentials is not None
        if ok.password is None and session.server.protocol is not model.Protocol.SMTP:
            session.error("no password available for the backend")
            self._internal_error(CloseReason.INTERNAL_ERROR)
            return
        session.login = ok.user
        session.upstream = ok.peer_name
        if unsafe_for_lines(ok.user, ok.password or b""):
            # The client's were checked before asking; these came from the auth server.
            session.error("auth http server sent a login or password with CR, LF or NUL")
            self._internal_error(CloseReason.INTERNAL_ERROR)
            return
        session.action = "connecting to upstream"
        self._machine = self._backend_login(ok, credentials)
        session.arm_timeout(session.server.timeout)
        self._connector = Connector(
            session.loop, (ok.server, ok.port), session.server.timeout, self._backend_connected
        )

    def _backend_login(self, ok: Ok, credentials: Credentials) -> login.BackendLogin:
        server = self.session.server
        options = login.BackendOptions.from_config(server, self._proxy_preamble())
        if server.proxy_pass is not None:
            # A static route has no auth server: the backend judges the password, so its
            # refusal is the client's failed login, not an internal error.
            options = dataclasses.replace(options, pass_error_message=True)
        password = ok.password or b""
        if server.protocol is model.Protocol.IMAP:
            return login.ImapBackendLogin(credentials.tag.rstrip(b" "), ok.user, password, options)
        if server.protocol is model.Protocol.POP3:
            return login.Pop3BackendLogin(ok.user, password, options)
        none = credentials.method == "none"
        client = login.SmtpClient(
            addr=self.session.client_addr,
            host=self.session.client_host,
            helo=credentials.helo,
            esmtp=credentials.esmtp,
            mail_from=credentials.mail_from if none else None,
            rcpt_to=credentials.rcpt_to if none else None,
        )
        return login.SmtpBackendLogin(
            server_name=server.server_name,
            client=client,
            user=b"" if none else ok.user,
            password=ok.password,
            xclient=server.xclient,
            proxy_smtp_auth=server.proxy_smtp_auth,
            options=options,
        )

    def _proxy_preamble(self) -> bytes:
        """The PROXY header for ``proxy_protocol on|v2`` towards the login."""
        session = self.session
        mode = session.server.proxy_protocol
        if mode is model.ProxyProtocolOut.OFF:
            return b""
        client = (session.client_addr, session.client_port)
        local = _local(session.sock)
        if mode is model.ProxyProtocolOut.V1:
            return codec.build_v1(client, local)
        conn = session.stream.tls if session.stream is not None else None
        tlvs = None
        if conn is not None:
            version, cipher = client_cert.tls_summary(conn)
            tlvs = codec.TlsTlvs(version, cipher, alpn=conn.get_alpn_proto_negotiated())
        return codec.build_v2(client, local, tlvs)

    def _backend_connected(self, sock: socket.socket | None, error: str) -> None:
        self._connector = None
        session = self.session
        if session.closed:
            if sock is not None:
                sock.close()
            return
        if sock is None:
            session.accounting.metrics.backend_connect_failed()
            self.backend_failed(
                login.Failed(session.machine.internal_error(), login.LogLine("error", error))
            )
            return
        session.action = "in upstream auth state"
        self.backend = Stream(session.loop, sock, _BackendLoginHandler(self))
        self._drive_backend()

    def backend_data(self, data: bytes) -> None:
        """Bytes (or, empty, the EOF) from the backend during its login."""
        assert self._machine is not None
        self._machine.receive_data(data)
        self._drive_backend()

    def _drive_backend(self) -> None:
        machine, stream = self._machine, self.backend
        while machine is not None and stream is not None and not self.session.closed:
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
                self._machine = None
                self._counted(worker_metrics.OK)
                self.session.logged_in(event, stream)
                return
            else:
                self.backend_failed(event)
                return

    def timed_out(self) -> None:
        """The phase timer fired while connecting to the backend or logging in there."""
        if self._connector is not None:
            self.session.accounting.metrics.backend_connect_failed()
        self.backend_failed(login.upstream_timed_out(self.session.server.protocol))

    def backend_failed(self, failed: login.Failed) -> None:
        """The backend login failed: log, count, send the client its line and close."""
        session = self.session
        if failed.log is not None:
            log = session.error if failed.log.level == "error" else session.info
            log(failed.log.message)
        # Only ever called during the backend login: the relay has handlers of its own.
        refused = failed.log is not None and failed.log.message.startswith(BACKEND_REFUSED)
        self._counted(worker_metrics.FAILED if refused else worker_metrics.ERROR)
        session.accounting.because(
            CloseReason.BACKEND_FAILED if refused else CloseReason.BACKEND_ERROR
        )
        self._machine = None
        session.send_and_close(failed.reply)


class _BackendLoginHandler:
    """The backend stream's handler until the relay takes over."""

    def __init__(self, steps: UpstreamLogin) -> None:
        self.steps = steps

    def data_received(self, data: bytes) -> None:
        self.steps.backend_data(data)

    def eof_received(self) -> None:
        self.steps.backend_data(b"")

    def connection_lost(self, reason: str) -> None:
        machine = self.steps.session.machine
        self.steps.backend_failed(
            login.Failed(machine.internal_error(), login.LogLine("error", reason))
        )

    def tls_established(self) -> None:
        """Never called: there is no TLS towards backends (as nginx)."""

    def write_drained(self) -> None:
        """Nothing to resume: the login machine sends one command per reply."""
