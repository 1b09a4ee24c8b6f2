"""What a session counts and records: close reasons, the access-log record, the metric calls.

The session says what happened (a handshake ended, a login was judged, the session closed);
this module decides which series and which record fields that touches, so the conductor
holds no metric names and the schema changes in one place.
"""

from __future__ import annotations

import time

from mailgate.config import model
from mailgate.worker.auth_http.client import AuthOutcome, TransportError
from mailgate.worker.auth_http.response import AuthWait, Fail, Invalid, Ok
from mailgate.worker.io.stream import Stream
from mailgate.worker.observe import metrics as worker_metrics
from mailgate.worker.observe.access_log import AccessLogs, CloseReason, Resumed, SessionRecord

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


class Accounting:
    """One session's access-log record, listener metrics and close reason."""

    def __init__(
        self,
        metrics: worker_metrics.ListenerMetrics,
        client: tuple[str, int],
        listen: model.Listen,
        server: model.ServerConfig,
    ) -> None:
        self.server = server
        self.record = SessionRecord(
            time.time(), client[0], client[1], listen.text, server.protocol.value
        )
        self.metrics = metrics
        self.metrics.accepted()
        self.close_reason: CloseReason | None = None
        self._started = time.monotonic()
        self._tls_started: float | None = None  # a handshake is running since then
        self._auth_started: float | None = None  # an auth_http request is out since then
        self._relay_base = (0, 0)  # backend bytes (out, in) when the relay started

    def because(self, reason: CloseReason) -> None:
        """Note why the session ends; the first reason given wins."""
        if self.close_reason is None:
            self.close_reason = reason

    @property
    def handshaking(self) -> bool:
        return self._tls_started is not None

    def tls_started(self) -> None:
        self._tls_started = time.monotonic()

    def handshake_done(self, stream: Stream) -> None:
        if self._tls_started is None:
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

    def auth_http_started(self) -> None:
        self._auth_started = time.monotonic()

    def auth_http_done(self, outcome: AuthOutcome) -> None:
        """An auth_http answer (or its failure) arrived; a proxy_pass route asked nobody."""
        if self._auth_started is None:
            return
        seconds = time.monotonic() - self._auth_started
        self._auth_started = None
        worker_metrics.auth_http(AUTH_HTTP_OUTCOMES[type(outcome)], seconds)

    def login(self, method: str, outcome: str) -> None:
        """One login attempt ended: ok (relaying), failed (refused) or error."""
        self.metrics.login(method, outcome)
        self.record.auth = outcome

    def relay_started(self, backend: Stream) -> None:
        self._relay_base = (backend.bytes_out, backend.bytes_in)

    def relay_ended(self, reason: str) -> None:
        """The relay ended, normally (``reason`` empty), idle too long, or on an error."""
        if not reason:
            self.because(CloseReason.PROXIED)
        elif reason == "timed out":
            self.because(CloseReason.TIMEOUT)
        else:
            self.because(CloseReason.RELAY_ERROR)

    def closed(
        self,
        access_logs: AccessLogs,
        client: tuple[str, int],
        upstream: str | None,
        stream: Stream | None,
        relayed: Stream | None,
    ) -> None:
        """At close: the failed handshake, the bytes ``relayed`` to and from the backend, the
        close reason, the access log."""
        if self._tls_started is not None:
            self._tls_started = None
            self.metrics.handshake(False, UNKNOWN, UNKNOWN, None)
        if relayed is not None:
            out_base, in_base = self._relay_base
            self.metrics.relayed(relayed.bytes_out - out_base, relayed.bytes_in - in_base)
        reason = self.close_reason or CloseReason.SHUTDOWN
        self.metrics.closed(reason.value)
        if not access_logs.enabled(self.server):
            return
        rec = self.record
        rec.client_addr, rec.client_port = client
        rec.upstream = upstream
        if stream is not None:
            rec.bytes_in, rec.bytes_out = stream.bytes_in, stream.bytes_out
        rec.duration = time.monotonic() - self._started
        rec.reason = reason
        access_logs.write(self.server, rec)
