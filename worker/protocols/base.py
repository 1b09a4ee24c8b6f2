"""What the IMAP, POP3 and SMTP machines share: the h11-style API, the read loop of
``ngx_mail_read_command``, error counting, and the SASL exchanges of ``ngx_mail_handler.c``.

Lifecycle (``Phase``): GREETING until ``greeting()``; COMMANDS while reading commands;
STARTTLS after a STARTTLS/STLS reply until ``tls_started()``; AUTH after a ``Login`` until
``login_failed()`` or ``take_pipelined()``; CLOSED after ``Close``; DONE once the pipelined
bytes were taken for the backend.

EOF (``receive_data(b"")``): complete commands already buffered are still answered, then
``Close`` comes where more data would be needed. nginx's outcome depends on timing there
(it closes at the next ``recv()``); mailgate picks the deterministic variant.
"""

from __future__ import annotations

import abc
import enum
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import ClassVar, Generic, Protocol, TypeVar

from mailgate.config import model
from mailgate.worker.protocols import sasl
from mailgate.worker.protocols.events import (
    NEED_DATA,
    PAUSED,
    Close,
    Credentials,
    Event,
    LocalProtocolError,
    Login,
    Send,
    StartTLS,
    Wait,
)
from mailgate.worker.protocols.lines import Command, CommandBuffer, Parse

StateT = TypeVar("StateT", bound=enum.Enum)


class Phase(enum.Enum):
    GREETING = "greeting"
    COMMANDS = "commands"
    STARTTLS = "starttls"
    AUTH = "auth"
    CLOSED = "closed"
    DONE = "done"


class Rc(enum.Enum):
    """A command handler's result, as nginx's ``rc``."""

    OK = "ok"  # reply with self._out
    DONE = "done"  # credentials complete: ask auth_http
    INVALID = "invalid"  # reply with the protocol's invalid-command line


# A mechanism given without an initial response: the step it waits for, and the auth method
# that must be enabled for it (PLAIN and LOGIN are always accepted, as nginx).
_PROMPTED = {
    sasl.Mechanism.LOGIN: (sasl.Step.USERNAME, None),
    sasl.Mechanism.PLAIN: (sasl.Step.PLAIN, None),
    sasl.Mechanism.CRAM_MD5: (sasl.Step.CRAM_MD5, "cram-md5"),
    sasl.Mechanism.EXTERNAL: (sasl.Step.EXTERNAL, "external"),
}
# A mechanism given with an initial response: the step that decodes it. EXTERNAL with an
# initial response is not checked against the enabled methods, exactly as nginx.
_ANSWERED = {
    sasl.Mechanism.LOGIN_USERNAME: sasl.Step.USERNAME,
    sasl.Mechanism.PLAIN_IR: sasl.Step.PLAIN,
    sasl.Mechanism.EXTERNAL_IR: sasl.Step.EXTERNAL,
}

# The nginx state that waits for each SASL step; every protocol's State enum has these names.
_STEP_STATES = {
    sasl.Step.USERNAME: "AUTH_LOGIN_USERNAME",
    sasl.Step.PASSWORD: "AUTH_LOGIN_PASSWORD",
    sasl.Step.PLAIN: "AUTH_PLAIN",
    sasl.Step.CRAM_MD5: "AUTH_CRAM_MD5",
    sasl.Step.EXTERNAL: "AUTH_EXTERNAL",
}

Handler = Callable[..., Rc]

# The method that decodes the client's answer at each SASL step.
_ANSWER_METHODS = {
    sasl.Step.USERNAME: "_answer_username",
    sasl.Step.PASSWORD: "_answer_password",
    sasl.Step.PLAIN: "_answer_plain",
    sasl.Step.CRAM_MD5: "_answer_cram_md5",
    sasl.Step.EXTERNAL: "_answer_external",
}


def sasl_states(states: type[StateT]) -> dict[sasl.Step, StateT]:
    """Map each SASL step to the protocol's state of the same nginx name."""
    return {step: states[name] for step, name in _STEP_STATES.items()}


def sasl_prompts(username: bytes, password: bytes, plain: bytes) -> dict[sasl.Step, bytes]:
    """The line that asks for each prompted SASL step (nginx's ``*_username``,
    ``*_password`` and ``*_next`` replies). EXTERNAL without an initial response asks for
    the user name, as nginx's ``ngx_mail_auth_external``; CRAM-MD5's challenge carries the
    salt, so it is built when sent."""
    return {
        sasl.Step.USERNAME: username,
        sasl.Step.PASSWORD: password,
        sasl.Step.PLAIN: plain,
        sasl.Step.EXTERNAL: username,
    }


class Parser(Protocol):
    def parse(self, buf: CommandBuffer) -> Command | Parse: ...

    def reset(self) -> None: ...


def make_salt(server_name: str) -> bytes:
    """``<random.time@server_name>``, as nginx's ngx_mail_salt makes it."""
    return f"<{random.getrandbits(31)}.{int(time.time())}@{server_name}>".encode()


class MailMachine(abc.ABC, Generic[StateT]):
    """The shared half of a client-side mail protocol machine (see the module docstring)."""

    START: StateT
    SASL_STATES: Mapping[sasl.Step, StateT]
    COMMANDS: Mapping[str, Collection[StateT]]  # verb -> the states that accept it
    OK_LINE: ClassVar[bytes]  # the reply when a handler sets nothing else
    INVALID_LINE: ClassVar[bytes]
    VERB_PREFIX: ClassVar[str]
    SASL_PREFIX: ClassVar[bytes]  # "+ " or "334 " before the CRAM-MD5 challenge
    SASL_PROMPTS: ClassVar[Mapping[sasl.Step, bytes]]  # see sasl_prompts()
    INTERNAL_ERROR: ClassVar[bytes]
    _handlers: ClassVar[dict[str, Handler]]
    _steps: ClassVar[dict[StateT, sasl.Step]]  # per class, built in __init__
    _command_states: ClassVar[frozenset[StateT]]
    _parser: Parser

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if hasattr(cls, "VERB_PREFIX"):
            cls._handlers = {
                name.removeprefix(cls.VERB_PREFIX): getattr(cls, name)
                for name in dir(cls)
                if name.startswith(cls.VERB_PREFIX)
            }

    def __init__(
        self, server: model.ServerConfig, salt: bytes | None = None, *, tls: bool = False
    ) -> None:
        """``salt`` is ``<rand.time@server_name>`` (no CRLF), made on first use when not
        given; ``tls`` is True on an implicit-TLS listener (``listen ... ssl``)."""
        self.server = server
        self._salt = salt
        self.tls = tls
        self.state: StateT = self.START
        self.errors = 0
        self.login_attempt = 0
        self._out = b""  # nginx's s->out: the reply being built
        self._buf = CommandBuffer(self._buffer_size())
        self._events: deque[Event] = deque()
        self._phase = Phase.GREETING
        self._quit = False
        self._eof = False
        self._starttls = False
        self._user = b""
        self._pending: Credentials | None = None
        # Hot path: these tables depend only on the class, so they are built once per class
        # (on its first machine) instead of once per connection.
        cls = type(self)
        if "_steps" not in cls.__dict__:
            cls._steps = {state: step for step, state in cls.SASL_STATES.items()}
            cls._command_states = frozenset().union(*cls.COMMANDS.values())

    # -- public API -------------------------------------------------------------------------

    @property
    def salt(self) -> bytes:
        """nginx's APOP / CRAM-MD5 salt; most sessions never need it, so it is made late."""
        if self._salt is None:
            self._salt = make_salt(self.server.server_name)
        return self._salt

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def buffered(self) -> int:
        """Bytes held in the command buffer; never more than its capacity."""
        return len(self._buf.data)

    def greeting(self) -> bytes:
        """The greeting to send now; the machine starts reading commands."""
        self._expect(Phase.GREETING)
        self._phase = Phase.COMMANDS
        return self._greeting()

    def read_size(self) -> int:
        """How many bytes ``receive_data`` accepts now: the free space of the command
        buffer. Read at most this much from the socket (nginx's ``recv(end - last)``)."""
        if self._phase in (Phase.CLOSED, Phase.DONE, Phase.STARTTLS):
            return 0
        return self._buf.space

    def receive_data(self, data: bytes) -> None:
        """Buffer client bytes; ``b""`` means EOF. Bytes after the close are ignored."""
        if self._phase in (Phase.CLOSED, Phase.DONE):
            return
        if not data:
            self._eof = True
            return
        if self._phase is Phase.STARTTLS:
            raise LocalProtocolError("plaintext offered while a TLS handshake is due")
        if len(data) > self._buf.space:
            raise LocalProtocolError(f"{len(data)} bytes offered, read_size() is {self._buf.space}")
        self._buf.feed(data)

    def next_event(self) -> Event | Wait:
        """The next event, or ``NEED_DATA`` / ``PAUSED``."""
        while not self._events:
            if self._phase is not Phase.COMMANDS:
                return self._idle()
            parsed = self._read_command()
            if parsed is Parse.AGAIN:
                if not self._eof:
                    return NEED_DATA
                self._close()
            else:
                self._out = b""
                self._process(parsed)
        return self._events.popleft()

    def tls_started(self) -> None:
        """The STARTTLS handshake succeeded: read commands again, over TLS."""
        self._expect(Phase.STARTTLS)
        self.tls = True
        self.state = self.START
        self._phase = Phase.COMMANDS

    def login_failed(self, message: bytes | None, error_code: bytes | None = None) -> bytes:
        """The reply for an auth_http error status; the machine goes back to the start
        state for another attempt (the caller closes instead when there was no Auth-Wait)."""
        self._expect(Phase.AUTH)
        self._phase = Phase.COMMANDS
        self.state = self.START
        return self._failure_line(message or b"", error_code)

    def internal_error(self) -> bytes:
        """The protocol's "internal server error" line (``internal_server_error`` of nginx's
        ``ngx_mail_protocol_t``); the machine is closed."""
        self._phase = Phase.CLOSED
        return self.INTERNAL_ERROR

    def take_pipelined(self) -> bytes:
        """After a successful login: the client bytes not yet consumed, for the backend."""
        self._expect(Phase.AUTH)
        self._phase = Phase.DONE
        data = self._buf.unread()
        self._buf.clear()
        return data

    # -- for the protocol modules -----------------------------------------------------------

    @abc.abstractmethod
    def _buffer_size(self) -> int:
        """The command buffer's size: ``*_client_buffer``, or POP3's fixed 128 bytes."""

    @abc.abstractmethod
    def _greeting(self) -> bytes:
        """The greeting line, as nginx sends it for this configuration."""

    def _process(self, parsed: Command | Parse) -> None:
        """One turn of nginx's ``*_auth_state``: handle the command, queue the reply."""
        self._out = self.OK_LINE
        rc = self._command(parsed) if isinstance(parsed, Command) else Rc.INVALID
        if rc is Rc.DONE:
            self._login()
            return
        if rc is Rc.INVALID:
            self.state = self.START
            self._parser.reset()
            self._out = self.INVALID_LINE
        self._finish(self._out)

    def _command(self, command: Command) -> Rc:
        if self.state in self._command_states:
            return self._dispatch(command)
        return self._continue_sasl(command)

    def _finish(self, reply: bytes) -> None:
        self._buf.rewind_if_drained()
        self._reply(reply)

    @abc.abstractmethod
    def _failure_line(self, message: bytes, error_code: bytes | None) -> bytes:
        """The reply to a login the auth server refused."""

    @abc.abstractmethod
    def _auth_methods(self) -> Collection[str]:
        """The ``*_auth`` methods this protocol accepts."""

    def _credentials(self, method: str, user: bytes, password: bytes) -> Credentials:
        if method in ("apop", "cram-md5"):
            salt: bytes | None = self.salt
        elif method == "external":
            # nginx sends the session's salt with EXTERNAL too, once one exists (a POP3
            # greeting with APOP, an earlier CRAM-MD5 challenge); it never makes one for it.
            salt = self._salt
        else:
            salt = None
        return Credentials(
            method=method,
            user=user,
            password=password,
            attempt=self.login_attempt,
            salt=salt,
        )

    @property
    def starttls_only(self) -> bool:
        """``starttls only`` and still in plaintext: authentication is refused."""
        return not self.tls and self.server.starttls is model.StartTLS.ONLY

    @property
    def starttls_allowed(self) -> bool:
        return not self.tls and self.server.starttls is not model.StartTLS.OFF

    def _dispatch(self, command: Command) -> Rc:
        """Run the verb's handler if the COMMANDS table allows it in this state."""
        if self.state not in self.COMMANDS.get(command.verb, ()):
            return Rc.INVALID
        rc: Rc = self._handlers[command.verb](self, command)
        return rc

    def _continue_sasl(self, command: Command) -> Rc:
        """A line answering a SASL challenge."""
        return self._answer(self._steps[self.state], command.args[0] if command.args else b"")

    def _read_command(self) -> Command | Parse:
        parsed = self._parser.parse(self._buf)
        if parsed is Parse.AGAIN and self._buf.full:
            self._quit = True  # "client sent too long command"
            return Parse.INVALID
        if parsed is Parse.INVALID:
            self.errors += 1
            if self.errors >= self.server.max_errors:
                self._quit = True  # "client sent too many invalid commands"
        return parsed

    def _idle(self) -> Event | Wait:
        if self._phase in (Phase.CLOSED, Phase.DONE):
            return Close()
        if self._phase is Phase.GREETING and self._eof:
            self._phase = Phase.CLOSED
            return Close()
        return PAUSED

    def _reply(self, data: bytes) -> None:
        self._events.append(Send(data))
        if self._quit:
            self._close()
        elif self._starttls:
            self._starttls = False
            self._buf.clear()  # nothing sent before the handshake may count after it
            self._parser.reset()
            self._events.append(StartTLS())
            self._phase = Phase.STARTTLS

    def _close(self) -> None:
        self._events.append(Close())
        self._phase = Phase.CLOSED

    def _say(self, line: bytes) -> Rc:
        """Reply ``line`` instead of the protocol's default OK line."""
        self._out = line
        return Rc.OK

    def _start_tls(self) -> Rc:
        if not self.starttls_allowed:
            return Rc.INVALID
        self._starttls = True
        return Rc.OK

    def _login(self) -> None:
        """nginx's ``ngx_mail_auth``: hand the credentials out, stop reading."""
        assert self._pending is not None
        self._events.append(Login(self._pending))
        self._pending = None
        self._buf.rewind_if_drained()
        self._parser.reset()
        self._phase = Phase.AUTH

    def _done(self, method: str, user: bytes, password: bytes) -> Rc:
        self.login_attempt += 1
        self._pending = self._credentials(method, user, password)
        return Rc.DONE

    def _start_sasl(self, args: list[bytes]) -> Rc:
        """``AUTH``/``AUTHENTICATE <mechanism> [initial-response]``."""
        mechanism = sasl.parse_mechanism(args)
        if mechanism is None:
            return Rc.INVALID
        if mechanism in _ANSWERED:
            return self._answer(_ANSWERED[mechanism], args[1])
        step, required = _PROMPTED[mechanism]
        if required is not None and required not in self._auth_methods():
            return Rc.INVALID
        self._await(step)
        return Rc.OK

    def _await(self, step: sasl.Step) -> None:
        if step is sasl.Step.CRAM_MD5:
            self._out = sasl.cram_md5_challenge(self.SASL_PREFIX, self.salt)
        else:
            self._out = self.SASL_PROMPTS[step]
        self.state = self.SASL_STATES[step]

    def _answer(self, step: sasl.Step, response: bytes) -> Rc:
        # Looked up by name rather than through a per-instance dict of bound methods, which
        # cost five bound methods and a dict per connection for the rare SASL exchange.
        handler: Callable[[bytes], Rc] = getattr(self, _ANSWER_METHODS[step])
        return handler(response)

    def _answer_username(self, response: bytes) -> Rc:
        self._await(sasl.Step.PASSWORD)  # set even if the answer is invalid, as nginx
        user = sasl.decode_base64(response)
        if user is None:
            return Rc.INVALID
        self._user = user
        return Rc.OK

    def _answer_password(self, response: bytes) -> Rc:
        password = sasl.decode_base64(response)
        if password is None:
            return Rc.INVALID
        return self._done("plain", self._user, password)

    def _answer_plain(self, response: bytes) -> Rc:
        pair = sasl.plain(response)
        return Rc.INVALID if pair is None else self._done("plain", *pair)

    def _answer_cram_md5(self, response: bytes) -> Rc:
        pair = sasl.cram_md5(response)
        return Rc.INVALID if pair is None else self._done("cram-md5", *pair)

    def _answer_external(self, response: bytes) -> Rc:
        user = sasl.decode_base64(response)
        return Rc.INVALID if user is None else self._done("external", user, b"")

    def _expect(self, phase: Phase) -> None:
        if self._phase is not phase:
            raise LocalProtocolError(f"machine is in phase {self._phase.value}, not {phase.value}")
