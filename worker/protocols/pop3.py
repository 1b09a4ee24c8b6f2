"""The POP3 client side before login (``ngx_mail_pop3_handler.c``, ``ngx_mail_pop3_module.c``).

The command buffer is a fixed 128 bytes (there is no ``pop3_client_buffer``). USER/PASS,
AUTH PLAIN and AUTH LOGIN are always accepted; ``pop3_auth`` enables APOP, CRAM-MD5 and
EXTERNAL and decides what CAPA and AUTH advertise.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Collection

from mailgate.config import model
from mailgate.worker.protocols import replies
from mailgate.worker.protocols.base import MailMachine, Rc, sasl_prompts, sasl_states
from mailgate.worker.protocols.lines import Command, LineParser

POP3_BUFFER_SIZE = 128  # hard-coded in ngx_mail_pop3_init_protocol
MAX_ARGS = 3


class Pop3State(enum.Enum):
    START = "ngx_pop3_start"
    USER = "ngx_pop3_user"
    AUTH_LOGIN_USERNAME = "ngx_pop3_auth_login_username"
    AUTH_LOGIN_PASSWORD = "ngx_pop3_auth_login_password"
    AUTH_PLAIN = "ngx_pop3_auth_plain"
    AUTH_CRAM_MD5 = "ngx_pop3_auth_cram_md5"
    AUTH_EXTERNAL = "ngx_pop3_auth_external"


_START = frozenset({Pop3State.START})
_START_OR_USER = frozenset({Pop3State.START, Pop3State.USER})
COMMANDS = {
    "USER": _START,
    "PASS": frozenset({Pop3State.USER}),
    "APOP": _START,
    "AUTH": _START,
    "CAPA": _START_OR_USER,
    "QUIT": _START_OR_USER,
    "NOOP": _START_OR_USER,
    "STLS": _START,
}

# pop3_auth method -> SASL mechanism name, in nginx's fixed order ("plain" enables LOGIN too).
_SASL_NAMES = (
    ("plain", b"PLAIN"),
    ("login", b"LOGIN"),
    ("cram-md5", b"CRAM-MD5"),
    ("external", b"EXTERNAL"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Pop3Capabilities:
    """The CAPA and AUTH lists of ``ngx_mail_pop3_merge_srv_conf``."""

    plain: bytes
    starttls: bytes  # adds STLS
    starttls_only: bytes  # no USER, no SASL line, STLS
    auth: bytes  # the reply to AUTH without arguments


@functools.lru_cache(maxsize=64)
def capabilities(extensions: tuple[str, ...], auth: tuple[str, ...]) -> Pop3Capabilities:
    methods = {*auth, "login"} if "plain" in auth else set(auth)
    names = [name for method, name in _SASL_NAMES if method in methods]
    lines = b"".join(ext.encode() + replies.CRLF for ext in extensions)
    without_user = b"".join(
        ext.encode() + replies.CRLF for ext in extensions if ext.lower() != "user"
    )
    sasl_line = b"SASL" + b"".join(b" " + name for name in names) + replies.CRLF
    head, end = replies.POP3_CAPA_HEADER, replies.POP3_LIST_END
    return Pop3Capabilities(
        plain=head + lines + sasl_line + end,
        starttls=head + lines + sasl_line + b"STLS\r\n" + end,
        starttls_only=head + without_user + b"STLS\r\n" + end,
        auth=replies.POP3_AUTH_HEADER + b"".join(n + replies.CRLF for n in names) + end,
    )


class Pop3Machine(MailMachine[Pop3State]):
    """POP3 before login: USER/PASS, APOP, AUTH, CAPA, NOOP, QUIT, STLS."""

    START = Pop3State.START
    SASL_STATES = sasl_states(Pop3State)
    COMMANDS = COMMANDS
    OK_LINE = replies.POP3_OK
    INVALID_LINE = replies.POP3_INVALID_COMMAND
    VERB_PREFIX = "pop3_"
    SASL_PREFIX = b"+ "
    SASL_PROMPTS = sasl_prompts(replies.POP3_USERNAME, replies.POP3_PASSWORD, replies.POP3_NEXT)
    INTERNAL_ERROR = replies.POP3_INTERNAL_ERROR

    def __init__(
        self, server: model.ServerConfig, salt: bytes | None = None, *, tls: bool = False
    ) -> None:
        super().__init__(server, salt, tls=tls)
        self._parser = LineParser(COMMANDS, MAX_ARGS, spaced=("USER", "PASS"))
        self._capabilities = capabilities(server.pop3_capabilities, server.pop3_auth)

    def capa(self, *, offer_stls: bool) -> bytes:
        """The CAPA reply; after USER nginx always gives the plain list."""
        if offer_stls and not self.tls and self.server.starttls is model.StartTLS.ON:
            return self._capabilities.starttls
        if offer_stls and self.starttls_only:
            return self._capabilities.starttls_only
        return self._capabilities.plain

    # -- verbs ----------------------------------------------------------------------------

    def pop3_USER(self, command: Command) -> Rc:
        if self.starttls_only or len(command.args) != 1:
            return Rc.INVALID
        self._user = command.args[0]
        self.state = Pop3State.USER
        return Rc.OK

    def pop3_PASS(self, command: Command) -> Rc:
        if len(command.args) != 1:
            return Rc.INVALID
        return self._done("plain", self._user, command.args[0])

    def pop3_APOP(self, command: Command) -> Rc:
        enabled = "apop" in self.server.pop3_auth
        if self.starttls_only or len(command.args) != 2 or not enabled:
            return Rc.INVALID
        return self._done("apop", command.args[0], command.args[1])

    def pop3_AUTH(self, command: Command) -> Rc:
        if self.starttls_only:
            return Rc.INVALID
        if not command.args:
            self._parser.reset()
            return self._say(self._capabilities.auth)
        return self._start_sasl(command.args)

    def pop3_CAPA(self, command: Command) -> Rc:
        return self._say(self.capa(offer_stls=self.state is Pop3State.START))

    def pop3_QUIT(self, command: Command) -> Rc:
        self._quit = True
        return Rc.OK

    def pop3_NOOP(self, command: Command) -> Rc:
        return Rc.OK

    def pop3_STLS(self, command: Command) -> Rc:
        return self._start_tls()

    # -- hooks ----------------------------------------------------------------------------

    def _buffer_size(self) -> int:
        return POP3_BUFFER_SIZE

    def _greeting(self) -> bytes:
        if {"apop", "cram-md5"} & set(self.server.pop3_auth):
            return replies.POP3_GREETING[:-2] + b" " + self.salt + replies.CRLF
        return replies.POP3_GREETING

    def _auth_methods(self) -> Collection[str]:
        return self.server.pop3_auth

    def _failure_line(self, message: bytes, error_code: bytes | None) -> bytes:
        return b"-ERR " + message + replies.CRLF
