"""The IMAP client side before login (``ngx_mail_imap_handler.c``, ``ngx_mail_imap_module.c``).

Replies are ``[untagged text] <tag> <out>``: the tag is the command's (with its space), or
``* `` when the line had no valid tag. nginx answers ``ID``, ``SELECT`` and every other
command with ``BAD invalid command``: only the six commands below exist before login.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Collection

from mailgate.config import model
from mailgate.worker.protocols import replies
from mailgate.worker.protocols.base import MailMachine, Rc, sasl_prompts, sasl_states
from mailgate.worker.protocols.events import Credentials
from mailgate.worker.protocols.lines import Command, ImapParser, Parse


class ImapState(enum.Enum):
    START = "ngx_imap_start"
    AUTH_LOGIN_USERNAME = "ngx_imap_auth_login_username"
    AUTH_LOGIN_PASSWORD = "ngx_imap_auth_login_password"
    AUTH_PLAIN = "ngx_imap_auth_plain"
    AUTH_CRAM_MD5 = "ngx_imap_auth_cram_md5"
    AUTH_EXTERNAL = "ngx_imap_auth_external"


_START = frozenset({ImapState.START})
COMMANDS = {
    "LOGIN": _START,
    "AUTHENTICATE": _START,
    "CAPABILITY": _START,
    "LOGOUT": _START,
    "NOOP": _START,
    "STARTTLS": _START,
}

# imap_auth method -> its CAPABILITY atom, in nginx's fixed order.
_AUTH_ATOMS = (
    ("plain", b"AUTH=PLAIN"),
    ("login", b"AUTH=LOGIN"),
    ("cram-md5", b"AUTH=CRAM-MD5"),
    ("external", b"AUTH=EXTERNAL"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class ImapCapabilities:
    """The three ``* CAPABILITY`` lines of ``ngx_mail_imap_merge_srv_conf``."""

    plain: bytes  # no STARTTLS offered, or already on TLS
    starttls: bytes  # starttls on, before TLS
    starttls_only: bytes  # starttls only, before TLS: LOGINDISABLED and no AUTH=


_VERBS = frozenset(COMMANDS)


@functools.lru_cache(maxsize=64)
def capabilities(extensions: tuple[str, ...], auth: tuple[str, ...]) -> ImapCapabilities:
    head = b"* CAPABILITY" + b"".join(b" " + ext.encode() for ext in extensions)
    atoms = b"".join(b" " + atom for method, atom in _AUTH_ATOMS if method in auth)
    return ImapCapabilities(
        plain=head + atoms + replies.CRLF,
        starttls=head + atoms + b" STARTTLS" + replies.CRLF,
        starttls_only=head + b" STARTTLS LOGINDISABLED" + replies.CRLF,
    )


class ImapMachine(MailMachine[ImapState]):
    """IMAP before login: greeting, CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE."""

    START = ImapState.START
    SASL_STATES = sasl_states(ImapState)
    COMMANDS = COMMANDS
    OK_LINE = replies.IMAP_OK
    INVALID_LINE = replies.IMAP_INVALID_COMMAND
    VERB_PREFIX = "imap_"
    SASL_PREFIX = b"+ "
    SASL_PROMPTS = sasl_prompts(
        replies.IMAP_USERNAME, replies.IMAP_PASSWORD, replies.IMAP_PLAIN_NEXT
    )
    INTERNAL_ERROR = replies.IMAP_INTERNAL_ERROR
    _parser: ImapParser

    def __init__(
        self, server: model.ServerConfig, salt: bytes | None = None, *, tls: bool = False
    ) -> None:
        super().__init__(server, salt, tls=tls)
        self._parser = ImapParser(_VERBS)
        self._capabilities = capabilities(server.imap_capabilities, server.imap_auth)
        self._text = b""  # an untagged line sent before the tagged one
        self._tagged = True

    @property
    def capability(self) -> bytes:
        """The ``* CAPABILITY`` line for the current TLS state."""
        if not self.tls and self.server.starttls is model.StartTLS.ON:
            return self._capabilities.starttls
        if self.starttls_only:
            return self._capabilities.starttls_only
        return self._capabilities.plain

    # -- verbs ----------------------------------------------------------------------------

    def imap_LOGIN(self, command: Command) -> Rc:
        if self.starttls_only or len(command.args) != 2 or not command.args[0]:
            return Rc.INVALID
        return self._done("plain", command.args[0], command.args[1])

    def imap_AUTHENTICATE(self, command: Command) -> Rc:
        if self.starttls_only:
            return Rc.INVALID
        rc = self._start_sasl(command.args)
        self._tagged = rc is not Rc.OK  # a challenge goes out untagged
        return rc

    def imap_CAPABILITY(self, command: Command) -> Rc:
        self._text = self.capability
        return Rc.OK

    def imap_LOGOUT(self, command: Command) -> Rc:
        self._quit = True
        self._text = replies.IMAP_BYE
        return Rc.OK

    def imap_NOOP(self, command: Command) -> Rc:
        return Rc.OK

    def imap_STARTTLS(self, command: Command) -> Rc:
        return self._start_tls()

    # -- the auth state -----------------------------------------------------------------

    def _read_command(self) -> Command | Parse:
        parsed = super()._read_command()
        self._quit = self._quit or self._parser.quit
        return parsed

    def _process(self, parsed: Command | Parse) -> None:
        self._text = b""
        self._tagged = True
        if parsed is Parse.NEXT:
            self._reply(replies.IMAP_NEXT)  # the literal follows; the command goes on
            return
        super()._process(parsed)

    def _command(self, command: Command) -> Rc:
        if self.state is ImapState.AUTH_LOGIN_USERNAME:
            self._tagged = False  # even an invalid user name gets a bare "BAD", as nginx
        return super()._command(command)

    def _finish(self, reply: bytes) -> None:
        reply = self._text + (self._tag() + reply if self._tagged else reply)
        self._end_command()
        self._reply(reply)

    def _tag(self) -> bytes:
        return self._parser.tag or replies.IMAP_UNTAGGED

    def _end_command(self) -> None:
        if self._parser.in_continuation:
            self._parser.resume_argument(self._buf.pos)  # keep the AUTHENTICATE tag
        else:
            self._buf.rewind_if_drained()
            self._parser.tag = b""

    # -- hooks ----------------------------------------------------------------------------

    def _buffer_size(self) -> int:
        return self.server.imap_client_buffer

    def _greeting(self) -> bytes:
        return replies.IMAP_GREETING

    def _auth_methods(self) -> Collection[str]:
        return self.server.imap_auth

    def _failure_line(self, message: bytes, error_code: bytes | None) -> bytes:
        return self._tag() + b"NO " + message + replies.CRLF

    def _credentials(self, method: str, user: bytes, password: bytes) -> Credentials:
        base = super()._credentials(method, user, password)
        return dataclasses.replace(base, tag=self._parser.tag)
