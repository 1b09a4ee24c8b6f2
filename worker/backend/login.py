"""Logging in to the backend once auth_http said OK, as ``ngx_mail_proxy_module.c`` (sans-IO).

One machine per protocol; the session connects to ``Ok.server:Ok.port`` and then::

    login.receive_data(chunk)          # every chunk read from the backend; b"" at EOF
    while (event := login.next_event()) is not NEED_DATA:
        BackendSend(data) -> write data to the backend (the PROXY header first, if any)
        Done(to_client)   -> write to_client to the client, log "client logged in", relay
        Failed(reply,log) -> log, write reply to the client, close both

How nginx reads a backend reply (``ngx_mail_proxy_read_response``), reproduced here:

* each reply goes into one buffer of ``proxy_buffer`` bytes, emptied when the next command is
  sent; bytes read beyond the buffer wait in the socket (here: in ``_pending``);
* a reply is judged once the buffer holds at least 4 bytes and ends in CRLF; a full buffer that
  does not end in CRLF is "upstream sent too long response line";
* the judgement is a prefix test at the start of the buffer, whatever follows it; SMTP
  multi-line replies (``250-``) wait for their last line;
* the final reply is forwarded as it sits in the buffer (IMAP, POP3, SMTP ``none``), or replaced
  by nginx's own ``235 2.0.0 OK`` (authenticated SMTP).
"""

from __future__ import annotations

import base64
import enum
import ipaddress
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mailgate.config.model import Protocol, ServerConfig
from mailgate.worker.backend.xtext import xtext_encode
from mailgate.worker.protocols.replies import INTERNAL_SERVER_ERROR
from mailgate.worker.sansio import NEED_DATA, NeedData, log_text

SMTP_AUTH_OK = b"235 2.0.0 OK\r\n"
_MIN_REPLY = 4  # nginx judges nothing shorter: "b->last - b->pos < 4"


@dataclass(frozen=True, slots=True)
class LogLine:
    level: str  # nginx level name: "info", "error"
    message: str


@dataclass(frozen=True, slots=True)
class BackendSend:
    """Bytes to write to the backend. ``secret`` lines carry a password: never log them."""

    data: bytes = field(repr=False)
    secret: bool = False

    def __repr__(self) -> str:
        shown = f"<hidden: {len(self.data)} bytes>" if self.secret else repr(self.data)
        return f"BackendSend({shown})"


@dataclass(frozen=True, slots=True)
class Done:
    """Logged in: write ``to_client`` to the client, then relay both ways."""

    to_client: bytes


@dataclass(frozen=True, slots=True)
class Failed:
    """Login failed: write ``reply`` to the client and close; log ``log`` if not None."""

    reply: bytes
    log: LogLine | None


Event = BackendSend | Done | Failed


def upstream_timed_out(protocol: Protocol) -> Failed:
    """What to do when ``timeout`` expires during the backend login."""
    return Failed(INTERNAL_SERVER_ERROR[protocol], LogLine("info", "upstream timed out"))


# --- judging one reply ---------------------------------------------------------------------


class Verdict(enum.Enum):
    ACCEPT = "accept"
    MORE = "more"  # complete by nginx's CRLF rule, yet the protocol wants more (SMTP, IMAP)


@dataclass(frozen=True, slots=True)
class Reject:
    shown_from: int  # where nginx starts the text it logs (after an IMAP tag it matched)


Check = Callable[[bytes], "Verdict | Reject"]


def starts_with(*prefixes: bytes) -> Check:
    """Accept a reply that starts with one of ``prefixes``."""

    def check(reply: bytes) -> Verdict | Reject:
        return Verdict.ACCEPT if reply.startswith(prefixes) else Reject(0)

    return check


def imap_tagged_ok(tag: bytes) -> Check:
    """``<tag> OK``, possibly after one untagged line such as ``* CAPABILITY ...`` (sent by
    SmarterMail and Gmail; nginx 1.27.3)."""
    expected = tag + b" "

    def check(reply: bytes) -> Verdict | Reject:
        start = 0
        if reply.startswith(b"* "):
            start = reply.find(b"\r\n", 2) + 2
            if len(reply) - start < _MIN_REPLY:
                return Verdict.MORE
        if reply.startswith(expected, start):
            start += len(expected)
            if reply.startswith(b"OK", start):
                return Verdict.ACCEPT
        return Reject(start)

    return check


def smtp_reply_complete(reply: bytes) -> bool:
    """Whether a ``250-...`` reply has its last line: nginx looks back from 7 bytes before the
    end for the CRLF that starts the last line, and checks the byte after its code."""
    if reply[3:4] != b"-":
        return True
    start = reply.rfind(b"\r\n", 1, len(reply) - 5)
    return start > 0 and reply[start + 5 : start + 6] != b"-"


def smtp_code(*codes: bytes) -> Check:
    """Accept a complete SMTP reply whose code is one of ``codes`` (any code if none given)."""

    def check(reply: bytes) -> Verdict | Reject:
        if not smtp_reply_complete(reply):
            return Verdict.MORE
        return Verdict.ACCEPT if not codes or reply[:3] in codes else Reject(0)

    return check


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """How a login reads replies and what it sends first, whatever the protocol."""

    pass_error_message: bool = False  # proxy_pass_error_message
    buffer_size: int = 4096  # proxy_buffer: also the longest reply line
    preamble: bytes = b""  # the PROXY header for proxy_protocol on|v2, sent before all

    @classmethod
    def from_config(cls, config: ServerConfig, preamble: bytes = b"") -> BackendOptions:
        return cls(config.proxy_pass_error_message, config.proxy_buffer, preamble)


# --- the machine ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """Send ``command``, then judge the backend's reply with ``check``."""

    command: bytes = field(repr=False)
    check: Check
    secret: bool = False  # the command carries a password
    on_reply: Callable[[bytes], None] | None = None  # sees the accepted reply


# A step, or a function choosing the next steps once it is reached (or failing instead).
PlanItem = Step | Callable[[], "list[Step] | Failed"]


class BackendLogin:
    """Waits for a greeting ``greeting`` accepts, then runs ``plan``; the final reply ends it.

    The per-protocol classes below only build the plan."""

    def __init__(
        self,
        protocol: Protocol,
        greeting: Check,
        plan: Iterable[PlanItem],
        *,
        forward_final_reply: bool,
        options: BackendOptions,
    ) -> None:
        self._protocol = protocol
        self._plan: deque[PlanItem] = deque(plan)
        self._forward_final = forward_final_reply
        self._pass_error_message = options.pass_error_message
        self._cap = max(options.buffer_size, _MIN_REPLY)
        self._buffer = bytearray()  # the reply being read, at most proxy_buffer bytes
        self._pending = bytearray()  # read but not yet in the buffer (nginx: still in the socket)
        self._eof = False
        self._outbox: deque[BackendSend] = deque(
            [BackendSend(options.preamble)] if options.preamble else []
        )
        self._finished: Done | Failed | None = None
        self._check = greeting  # judges the reply now awaited
        self._on_reply: Callable[[bytes], None] | None = None

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the backend; ``b""`` means the backend closed the connection."""
        if data:
            self._pending += data
        else:
            self._eof = True

    @property
    def full(self) -> bool:
        """Bytes read ahead of the reply being judged fill a second buffer: read no more
        until the next command is sent (a backend may not grow the worker's memory)."""
        return len(self._pending) >= self._cap

    def next_event(self) -> Event | NeedData:
        """The next thing to do; once ``Done`` or ``Failed``, that event again."""
        if self._outbox:
            return self._outbox.popleft()
        if self._finished is not None:
            return self._finished
        room = self._cap - len(self._buffer)
        self._buffer += self._pending[:room]
        del self._pending[:room]
        verdict = self._judge()
        if isinstance(verdict, Failed):
            return self._finish(verdict)
        if verdict is Verdict.MORE:
            stuck = self._eof or len(self._buffer) >= self._cap
            # nginx: EOF, or a recv() into a full buffer, is an internal error without a log
            return self._finish(Failed(self._internal_error, None)) if stuck else NEED_DATA
        if isinstance(verdict, Reject):
            return self._finish(self._rejected(verdict))
        return self._accepted()

    @property
    def _internal_error(self) -> bytes:
        return INTERNAL_SERVER_ERROR[self._protocol]

    def _judge(self) -> Verdict | Reject | Failed:
        reply = bytes(self._buffer)
        if len(reply) < _MIN_REPLY:
            return Verdict.MORE
        if not reply.endswith(b"\r\n"):
            if len(reply) < self._cap:
                return Verdict.MORE
            line = log_text(reply[:-1].split(b"\0", 1)[0])
            message = f'upstream sent too long response line: "{line}"'
            return Failed(self._internal_error, LogLine("error", message))
        return self._check(reply)

    def _rejected(self, verdict: Reject) -> Failed:
        reply = bytes(self._buffer)
        shown = reply[verdict.shown_from : -2]
        if self._pass_error_message:
            message = f'upstream sent invalid response: "{log_text(shown)}"'
            return Failed(reply, LogLine("info", message))
        shown = shown.split(b"\0", 1)[0]  # nginx logs it with %s here
        message = f'upstream sent invalid response: "{log_text(shown)}"'
        return Failed(self._internal_error, LogLine("error", message))

    def _accepted(self) -> Event | NeedData:
        reply = bytes(self._buffer)
        self._buffer.clear()
        if self._on_reply is not None:
            self._on_reply(reply)
        if not self._plan:
            final = reply if self._forward_final else SMTP_AUTH_OK
            return self._finish(Done(final + bytes(self._pending)))
        step = self._next_step()
        if isinstance(step, Failed):
            return self._finish(step)
        self._check, self._on_reply = step.check, step.on_reply
        return BackendSend(step.command, step.secret)

    def _next_step(self) -> Step | Failed:
        item = self._plan.popleft()
        while not isinstance(item, Step):
            chosen = item()
            if isinstance(chosen, Failed):
                return chosen
            self._plan.extendleft(reversed(chosen))
            item = self._plan.popleft()
        return item

    def _finish(self, event: Done | Failed) -> Done | Failed:
        self._finished = event
        return event


# --- the three protocols -------------------------------------------------------------------


class ImapBackendLogin(BackendLogin):
    """``* OK`` greeting; ``<tag> LOGIN {n}``, ``<user> {m}``, ``<password>``, each literal
    after a ``+`` continuation; the tagged ``OK`` (with the untagged line before it, if any)
    goes to the client. ``tag`` is the client's own tag, reused towards the backend."""

    def __init__(
        self,
        tag: bytes,
        user: bytes,
        password: bytes,
        options: BackendOptions = BackendOptions(),
    ) -> None:
        continuation = starts_with(b"+")
        plan = [
            Step(tag + b" LOGIN {%d}\r\n" % len(user), continuation),
            Step(user + b" {%d}\r\n" % len(password), continuation),
            Step(password + b"\r\n", imap_tagged_ok(tag), secret=True),
        ]
        super().__init__(
            Protocol.IMAP,
            starts_with(b"* OK"),
            plan,
            forward_final_reply=True,
            options=options,
        )


class Pop3BackendLogin(BackendLogin):
    """``+OK`` greeting; ``USER``, ``PASS``; the final ``+OK`` goes to the client. APOP and
    CRAM-MD5 clients log in the same way, with the Auth-Pass the auth server returned."""

    def __init__(
        self,
        user: bytes,
        password: bytes,
        options: BackendOptions = BackendOptions(),
    ) -> None:
        ok = starts_with(b"+OK")
        plan = [
            Step(b"USER " + user + b"\r\n", ok),
            Step(b"PASS " + password + b"\r\n", ok, secret=True),
        ]
        super().__init__(
            Protocol.POP3,
            ok,
            plan,
            forward_final_reply=True,
            options=options,
        )


@dataclass(frozen=True, slots=True)
class SmtpClient:
    """What the SMTP client said or was before auth, as nginx replays it to the backend.

    ``mail_from`` / ``rcpt_to`` are the whole first MAIL FROM and RCPT TO lines without CRLF,
    given only under ``smtp_auth none`` (they make the login unauthenticated)."""

    addr: str  # the client address (after realip), as in Client-IP
    host: str  # Client-Host: a validated name, [UNAVAILABLE] or [TEMPUNAVAIL]
    helo: bytes = b""  # the HELO/EHLO argument; b"" if the client sent none
    esmtp: bool = False  # the client said EHLO
    mail_from: bytes | None = None
    rcpt_to: bytes | None = None

    def __post_init__(self) -> None:
        if (self.mail_from is None) != (self.rcpt_to is None):
            raise ValueError("smtp_auth none replays both MAIL FROM and RCPT TO, or neither")

    @property
    def unauthenticated(self) -> bool:
        return self.mail_from is not None


def xclient_command(client: SmtpClient, login: bytes) -> bytes:
    """``XCLIENT ADDR=[IPV6:]<ip>[ LOGIN=<xtext>] NAME=<host>``; ``login`` b"" leaves LOGIN out
    (nginx does under ``proxy_smtp_auth on`` or when nobody logged in)."""
    try:
        ipv6 = ipaddress.ip_address(client.addr).version == 6
    except ValueError:  # a unix-socket client: "unix:"
        ipv6 = False
    line = b"XCLIENT ADDR=" + (b"IPV6:" if ipv6 else b"") + client.addr.encode()
    if login:
        line += b" LOGIN=" + xtext_encode(login)
    return line + b" NAME=" + client.host.encode() + b"\r\n"


def auth_mechanisms(ehlo_reply: bytes) -> frozenset[bytes]:
    """The SASL mechanisms an EHLO reply offers (``250-AUTH PLAIN LOGIN``, or ``AUTH=``)."""
    mechanisms: set[bytes] = set()
    for line in ehlo_reply.split(b"\r\n"):
        words = line[4:].replace(b"=", b" ", 1).upper().split()
        if words[:1] == [b"AUTH"]:
            mechanisms.update(words[1:])
    return frozenset(mechanisms)


class SmtpBackendLogin(BackendLogin):
    """``220`` greeting; ``EHLO|HELO <server_name>``; with ``xclient on`` an XCLIENT and the
    client's own HELO/EHLO again; then ``AUTH PLAIN`` (``proxy_smtp_auth on``) or the client's
    MAIL FROM and RCPT TO (``smtp_auth none``). The client gets ``235 2.0.0 OK``, or under
    ``none`` the backend's RCPT reply, whatever it says.

    Beyond nginx: when the backend's latest EHLO reply offers AUTH LOGIN but not PLAIN, the
    login uses AUTH LOGIN (nginx would send AUTH PLAIN and fail, nginx/nginx#601).
    """

    def __init__(
        self,
        *,
        server_name: str,
        client: SmtpClient,
        user: bytes,
        password: bytes | None,
        xclient: bool = True,
        proxy_smtp_auth: bool = False,
        options: BackendOptions = BackendOptions(),
    ) -> None:
        self._user, self._password = user, password
        self._greeting_reply = b""
        ok_250 = smtp_code(b"250")
        remember = self._remember_greeting
        hello = b"EHLO " if client.esmtp or xclient else b"HELO "
        plan: list[PlanItem] = [
            Step(hello + server_name.encode() + b"\r\n", ok_250, on_reply=remember)
        ]
        if xclient:
            login = b"" if proxy_smtp_auth else user
            plan.append(Step(xclient_command(client, login), smtp_code(b"220", b"250")))
            if client.helo:
                again = (b"EHLO " if client.esmtp else b"HELO ") + client.helo + b"\r\n"
                plan.append(Step(again, ok_250, on_reply=remember))
        if client.mail_from is not None and client.rcpt_to is not None:
            plan.append(Step(client.mail_from + b"\r\n", ok_250))
            plan.append(Step(client.rcpt_to + b"\r\n", smtp_code()))
        elif proxy_smtp_auth:
            plan.append(self._auth_steps)
        super().__init__(
            Protocol.SMTP,
            smtp_code(b"220"),
            plan,
            forward_final_reply=client.unauthenticated,
            options=options,
        )

    def _remember_greeting(self, reply: bytes) -> None:
        self._greeting_reply = reply

    def _auth_steps(self) -> list[Step] | Failed:
        # An empty password (EXTERNAL, or AUTH PLAIN with none) would only be refused by the
        # backend: nginx sends none either ("no password available", 451).
        if not self._password:
            return Failed(
                INTERNAL_SERVER_ERROR[Protocol.SMTP], LogLine("error", "no password available")
            )
        offered = auth_mechanisms(self._greeting_reply)
        if b"LOGIN" in offered and b"PLAIN" not in offered:
            challenge = smtp_code(b"334")
            return [
                Step(b"AUTH LOGIN\r\n", challenge),
                Step(base64.b64encode(self._user) + b"\r\n", challenge),
                Step(base64.b64encode(self._password) + b"\r\n", smtp_code(b"235"), secret=True),
            ]
        plain = base64.b64encode(b"\0" + self._user + b"\0" + self._password)
        return [Step(b"AUTH PLAIN " + plain + b"\r\n", smtp_code(b"235"), secret=True)]
