"""The SMTP client side before login (``ngx_mail_smtp_handler.c``, ``ngx_mail_smtp_module.c``).

``smtp_greeting_delay``: the caller calls ``greeting()`` once the delay is over. Bytes
received before that (an early talker) make ``next_event()`` answer ``503 5.5.0 Improper
use of SMTP command pipelining`` and close, as nginx; no greeting is sent then.

``smtp_auth none``: MAIL FROM and RCPT TO are collected and the first RCPT TO yields
``Login`` with method ``none`` (``starttls only`` does not gate this, as in nginx).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Collection

from mailgate.config import model
from mailgate.worker.protocols import replies
from mailgate.worker.protocols.base import MailMachine, Phase, Rc, sasl_prompts, sasl_states
from mailgate.worker.protocols.events import Credentials, Event, Wait
from mailgate.worker.protocols.lines import Command, LineParser

MAX_ARGS = 11


class SmtpState(enum.Enum):
    START = "ngx_smtp_start"
    AUTH_LOGIN_USERNAME = "ngx_smtp_auth_login_username"
    AUTH_LOGIN_PASSWORD = "ngx_smtp_auth_login_password"
    AUTH_PLAIN = "ngx_smtp_auth_plain"
    AUTH_CRAM_MD5 = "ngx_smtp_auth_cram_md5"
    AUTH_EXTERNAL = "ngx_smtp_auth_external"


_START = frozenset({SmtpState.START})
_NEVER: frozenset[SmtpState] = frozenset()
COMMANDS = {
    "HELO": _START,
    "EHLO": _START,
    "AUTH": _START,
    "QUIT": _START,
    "MAIL": _START,
    "RCPT": _START,
    "RSET": _START,
    "NOOP": _START,
    "STARTTLS": _START,
    # Known to nginx's parser (so not counted by max_errors) but always refused.
    "VRFY": _NEVER,
    "EXPN": _NEVER,
    "HELP": _NEVER,
}

# smtp_auth method -> AUTH keyword, in nginx's fixed order ("none" is never advertised).
_AUTH_NAMES = (
    ("plain", b"PLAIN"),
    ("login", b"LOGIN"),
    ("cram-md5", b"CRAM-MD5"),
    ("external", b"EXTERNAL"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class SmtpReplies:
    """The lines of ``ngx_mail_smtp_merge_srv_conf`` that depend on the configuration."""

    greeting: bytes
    helo: bytes
    ehlo: bytes
    ehlo_starttls: bytes
    ehlo_starttls_only: bytes  # no AUTH line before TLS


def _multiline(lines: list[bytes]) -> bytes:
    """``250-a``, ``250-b``, ..., ``250 last``."""
    head = b"".join(b"250-" + line + replies.CRLF for line in lines[:-1])
    return head + b"250 " + lines[-1] + replies.CRLF


@functools.lru_cache(maxsize=64)
def smtp_replies(
    server_name: str, extensions: tuple[str, ...], auth: tuple[str, ...]
) -> SmtpReplies:
    name = server_name.encode()
    head = [name, *(ext.encode() for ext in extensions)]
    keywords = [keyword for method, keyword in _AUTH_NAMES if method in auth]
    auth_line = [b"AUTH " + b" ".join(keywords)] if keywords else []
    return SmtpReplies(
        greeting=b"220 " + name + b" ESMTP ready" + replies.CRLF,
        helo=b"250 " + name + replies.CRLF,
        ehlo=_multiline(head + auth_line),
        ehlo_starttls=_multiline([*head, *auth_line, b"STARTTLS"]),
        ehlo_starttls_only=_multiline([*head, b"STARTTLS"]),
    )


class SmtpMachine(MailMachine[SmtpState]):
    """SMTP before login: HELO/EHLO, AUTH, STARTTLS, NOOP, RSET, QUIT; MAIL/RCPT for none."""

    START = SmtpState.START
    SASL_STATES = sasl_states(SmtpState)
    COMMANDS = COMMANDS
    OK_LINE = replies.SMTP_OK
    INVALID_LINE = replies.SMTP_INVALID_COMMAND
    VERB_PREFIX = "smtp_"
    SASL_PREFIX = b"334 "
    SASL_PROMPTS = sasl_prompts(replies.SMTP_USERNAME, replies.SMTP_PASSWORD, replies.SMTP_NEXT)
    INTERNAL_ERROR = replies.SMTP_INTERNAL_ERROR

    def __init__(
        self, server: model.ServerConfig, salt: bytes | None = None, *, tls: bool = False
    ) -> None:
        super().__init__(server, salt, tls=tls)
        self._parser = LineParser(COMMANDS, MAX_ARGS)
        self._replies = smtp_replies(server.server_name, server.smtp_capabilities, server.smtp_auth)
        self.helo = b""
        self.esmtp = False
        self.mail_from = b""
        self.rcpt_to = b""

    @property
    def ehlo(self) -> bytes:
        """The EHLO reply for the current TLS state."""
        if not self.tls and self.server.starttls is model.StartTLS.ON:
            return self._replies.ehlo_starttls
        if self.starttls_only:
            return self._replies.ehlo_starttls_only
        return self._replies.ehlo

    # -- verbs ----------------------------------------------------------------------------

    def smtp_HELO(self, command: Command) -> Rc:
        if not self._greet(command):
            return self._invalid_argument()
        return self._say(self._replies.helo)

    def smtp_EHLO(self, command: Command) -> Rc:
        if not self._greet(command):
            return self._invalid_argument()
        self.esmtp = True
        return self._say(self.ehlo)

    def smtp_AUTH(self, command: Command) -> Rc:
        if self.starttls_only:
            return Rc.INVALID
        if not command.args:
            return self._invalid_argument()
        return self._start_sasl(command.args)

    def smtp_QUIT(self, command: Command) -> Rc:
        self._quit = True
        return self._say(replies.SMTP_BYE)

    def smtp_MAIL(self, command: Command) -> Rc:
        if "none" not in self.server.smtp_auth:
            return self._say(replies.SMTP_AUTH_REQUIRED)  # "client was rejected"
        if self.mail_from:
            return self._say(replies.SMTP_BAD_SEQUENCE)
        if not command.args:
            return self._say(replies.SMTP_INVALID_ARGUMENT)
        self.mail_from = command.text
        return Rc.OK

    def smtp_RCPT(self, command: Command) -> Rc:
        if not self.mail_from:
            return self._say(replies.SMTP_BAD_SEQUENCE)
        if not command.args:
            return self._say(replies.SMTP_INVALID_ARGUMENT)
        self.rcpt_to = command.text
        return self._done("none", b"", b"")

    def smtp_RSET(self, command: Command) -> Rc:
        self.mail_from = self.rcpt_to = b""
        return Rc.OK

    def smtp_NOOP(self, command: Command) -> Rc:
        return Rc.OK

    def smtp_STARTTLS(self, command: Command) -> Rc:
        rc = self._start_tls()
        if rc is Rc.OK:
            # RFC 3207: forget what the client said before TLS.
            self.helo = self.mail_from = self.rcpt_to = b""
            self._out = replies.SMTP_STARTTLS
        return rc

    def _greet(self, command: Command) -> bool:
        if len(command.args) != 1:
            return False
        self.helo = command.args[0]
        self.mail_from = self.rcpt_to = b""
        return True

    def _invalid_argument(self) -> Rc:
        self._parser.reset()
        return self._say(replies.SMTP_INVALID_ARGUMENT)

    def _idle(self) -> Event | Wait:
        delayed = self.server.smtp_greeting_delay > 0
        if self.phase is Phase.GREETING and delayed and not self._buf.drained:
            self._buf.clear()  # "client was rejected before greeting"
            self._quit = True
            self._reply(replies.SMTP_INVALID_PIPELINING)
            return self._events.popleft()
        return super()._idle()

    # -- hooks ----------------------------------------------------------------------------

    def _buffer_size(self) -> int:
        return self.server.smtp_client_buffer

    def _greeting(self) -> bytes:
        return self._replies.greeting

    def _auth_methods(self) -> Collection[str]:
        return self.server.smtp_auth

    def _failure_line(self, message: bytes, error_code: bytes | None) -> bytes:
        code = error_code or replies.SMTP_AUTH_ERROR_CODE
        return code + b" " + message + replies.CRLF

    def _credentials(self, method: str, user: bytes, password: bytes) -> Credentials:
        base = super()._credentials(method, user, password)
        return dataclasses.replace(
            base, helo=self.helo, esmtp=self.esmtp, mail_from=self.mail_from, rcpt_to=self.rcpt_to
        )
