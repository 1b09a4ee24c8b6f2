"""Before the greeting: SMTP's client-name lookup and ``smtp_greeting_delay``.

nginx's SMTP module resolves the client's name before it greets (the name goes to the auth
server and into XCLIENT) and may hold the greeting back to catch clients that talk first;
IMAP and POP3 greet at once. The session hears :meth:`Host.greet` when it is time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mailgate.config import model
from mailgate.worker.io.loop import Loop
from mailgate.worker.io.stream import Stream


class ClientNames(Protocol):
    """The SMTP client-name lookup (``resolver``); ``on_done(host, log_line or None)``."""

    def client_host(
        self,
        address: str,
        on_done: Callable[[str, str | None], None],
        timeout: float | None = None,
    ) -> Callable[[], None]: ...


Resolvers = Callable[[model.ServerConfig, Loop], ClientNames | None]


class Host(Protocol):
    """What the steps before the greeting need of their session (``upstream.Conductor``
    extends it with what the login steps need)."""

    client_host: str
    action: str | None

    @property
    def loop(self) -> Loop: ...
    @property
    def server(self) -> model.ServerConfig: ...
    @property
    def stream(self) -> Stream | None: ...
    @property
    def client_addr(self) -> str: ...

    def error(self, message: str) -> None: ...
    def greet(self) -> None: ...
    def close(self) -> None: ...


def begin(session: Host, resolvers: Resolvers) -> BeforeGreeting | None:
    """Greet now; or, for SMTP, first look the client's name up and wait the greeting delay
    (returns those steps, for the session to cancel if it closes first)."""
    if session.server.protocol is not model.Protocol.SMTP:
        session.action = "in auth state"  # nothing to look up or wait for
        session.greet()
        return None
    steps = BeforeGreeting(session)
    steps.start(resolvers)
    return steps


class BeforeGreeting:
    """The client-name lookup, then the greeting delay, then :meth:`Host.greet`."""

    def __init__(self, session: Host) -> None:
        self.session = session
        self._cancel_lookup: Callable[[], None] | None = None

    def start(self, resolvers: Resolvers) -> None:
        session = self.session
        resolver = None
        if session.server.protocol is model.Protocol.SMTP:
            resolver = resolvers(session.server, session.loop)
        if resolver is None or session.client_addr == "unix:":
            self._after_lookup()
            return
        assert session.stream is not None
        session.stream.pause_reading()
        session.action = "in resolving"
        self._cancel_lookup = resolver.client_host(
            session.client_addr, self._looked_up, session.server.resolver_timeout
        )

    def cancel(self) -> None:
        """The session closes: drop a lookup still running."""
        if self._cancel_lookup is not None:
            self._cancel_lookup()
            self._cancel_lookup = None

    def close(self) -> None:
        """End the session (the loop calls this when one of our callbacks fails)."""
        self.session.close()

    def _looked_up(self, host: str, log_line: str | None) -> None:
        self._cancel_lookup = None
        self.session.client_host = host
        if log_line:
            self.session.error(log_line)
        self._after_lookup()

    def _after_lookup(self) -> None:
        session = self.session
        assert session.stream is not None
        session.action = "in auth state"
        delay = session.server.smtp_greeting_delay
        if session.server.protocol is model.Protocol.SMTP and delay > 0:
            # The client may talk meanwhile; the machine answers an early talker with 503.
            session.stream.resume_reading()
            session.loop.call_later(delay, session.greet)
            return
        session.greet()
