"""A session's error-log lines, with nginx's mail context (``ngx_mail_log_error``):

*7 client timed out while in auth state, client: 192.0.2.1, server: 0.0.0.0:143,
login: "alice", upstream: 127.0.0.1:1143
"""

from __future__ import annotations

from typing import Protocol

from mailgate.config import model
from mailgate.worker.sansio import log_text


class SessionLog(Protocol):
    """The error log as a session uses it."""

    def error(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...


class Machine(Protocol):
    """The protocol machine, for whether TLS is on."""

    @property
    def tls(self) -> bool: ...


class Described(Protocol):
    """What the context says about a session; read at each line, as it changes."""

    @property
    def action(self) -> str | None: ...
    @property
    def client_addr(self) -> str: ...
    @property
    def machine(self) -> Machine: ...
    @property
    def listen(self) -> model.Listen: ...
    @property
    def login(self) -> bytes | None: ...
    @property
    def upstream(self) -> str | None: ...


class ContextLog:
    """The error log of session ``number``: every line carries the session's context."""

    def __init__(self, log: SessionLog, info_enabled: bool, number: int, about: Described):
        self.log = log
        self.info_enabled = info_enabled
        self.number = number
        self.about = about

    def context(self) -> str:
        """nginx's mail log context: what we were doing and with whom."""
        about = self.about
        # nginx leaves the action out of the two lines a session logs between phases.
        text = f" while {about.action}" if about.action else ""
        text += f", client: {about.client_addr}"
        if about.machine.tls and not about.listen.ssl:  # TLS came by STARTTLS
            text += " using starttls"
        text += f", server: {about.listen.text}"
        if about.login is not None:
            text += f', login: "{log_text(about.login)}"'
        if about.upstream is not None:
            text += f", upstream: {about.upstream}"
        return text

    def info(self, message: str) -> None:
        if not self.info_enabled:
            return  # hot path: the context string is the costly part, and nobody reads it
        self.log.info(f"*{self.number} {message}{self.context()}")

    def error(self, message: str) -> None:
        self.log.error(f"*{self.number} {message}{self.context()}")
