"""Command buffers and tokenizers, as ``ngx_mail_read_command`` and ``ngx_mail_parse.c``.

The buffer is nginx's ``ngx_buf_t``: a fixed capacity (``imap_client_buffer``,
``smtp_client_buffer``, 128 bytes for POP3), a read position, and no compaction: it is
rewound only once every byte in it was consumed. So pipelined commands count against the
capacity until the buffer drains, and a command that cannot complete in the space left is
"too long", exactly as in nginx. Nothing here ever grows past the capacity.

Parsers resume where the last call stopped (their state lives on the parser, nginx's
``s->state``) and return a ``Command``, or ``AGAIN`` (need more bytes), ``INVALID`` (the
line up to and including its LF is consumed), or ``NEXT`` (IMAP: send "+ OK", a
synchronizing literal follows).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field

CR = 0x0D
LF = 0x0A
SP = 0x20
_U64 = (1 << 64) - 1  # nginx's literal length is an ngx_uint_t and wraps


class Parse(enum.Enum):
    AGAIN = "again"
    INVALID = "invalid"
    NEXT = "next"


@dataclass(slots=True)
class Command:
    """One parsed command line (or SASL continuation line)."""

    verb: str  # upper case; for continuation lines the verb that started the exchange
    args: list[bytes] = field(default_factory=list)
    text: bytes = b""  # the line from the verb to the end of its last argument (SMTP)
    tag: bytes = b""  # IMAP: the tag and the space after it, as nginx keeps it


class CommandBuffer:
    """A fixed-capacity input buffer with nginx's pos/last discipline."""

    __slots__ = ("capacity", "data", "pos")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = bytearray()
        self.pos = 0

    @property
    def space(self) -> int:
        return self.capacity - len(self.data)

    @property
    def full(self) -> bool:
        return len(self.data) >= self.capacity

    @property
    def drained(self) -> bool:
        return self.pos >= len(self.data)

    def feed(self, data: bytes) -> None:
        if len(data) > self.space:
            raise OverflowError(f"{len(data)} bytes offered, {self.space} free")
        self.data += data

    def unread(self) -> bytes:
        return bytes(self.data[self.pos :])

    def clear(self) -> None:
        self.data.clear()
        self.pos = 0

    def rewind_if_drained(self) -> None:
        if self.drained:
            self.clear()


class LineParser:
    """POP3 and SMTP commands: a verb of letters, then space-separated arguments.

    After an ``AUTH`` command the parser reads SASL continuation lines (nginx leaves the
    parser in ``sw_argument``) until the machine calls ``reset()``.
    """

    def __init__(self, verbs: Collection[str], max_args: int, spaced: Collection[str] = ()):
        self._verbs = frozenset(verbs)
        self._max_args = max_args
        self._spaced = frozenset(spaced)  # POP3 USER/PASS: spaces belong to the argument
        self.continuation = False
        self._verb = ""

    def reset(self) -> None:
        self.continuation = False

    def parse(self, buf: CommandBuffer) -> Command | Parse:
        lf = buf.data.find(b"\n", buf.pos)
        if lf < 0:
            return Parse.AGAIN
        line = bytes(buf.data[buf.pos : lf])
        buf.pos = lf + 1
        line = line.removesuffix(b"\r")
        parsed = None if b"\r" in line else self._split(line)
        if parsed is None:
            self.continuation = False
            return Parse.INVALID
        self.continuation = parsed.verb == "AUTH"
        return parsed

    def _split(self, line: bytes) -> Command | None:
        if self.continuation:
            first, _, rest = line.partition(b" ")
            args = [first, *_words(rest)]
            verb = self._verb
        else:
            word, _, rest = line.partition(b" ")
            verb = word.upper().decode("ascii") if word.isalpha() else ""
            if verb not in self._verbs:
                return None
            spaced = rest.lstrip(b" ")
            args = ([spaced] if spaced else []) if verb in self._spaced else _words(rest)
        if len(args) > self._max_args:
            return None
        self._verb = verb
        return Command(verb, args, line.rstrip(b" "))


def _words(text: bytes) -> list[bytes]:
    return [word for word in text.split(b" ") if word]


class _Imap(enum.Enum):
    """``ngx_mail_imap_parse_command`` states."""

    START = enum.auto()
    TAG = enum.auto()
    INVALID = enum.auto()
    SPACES_BEFORE_COMMAND = enum.auto()
    COMMAND = enum.auto()
    SPACES_BEFORE_ARGUMENT = enum.auto()
    ARGUMENT = enum.auto()
    BACKSLASH = enum.auto()
    LITERAL = enum.auto()
    NO_SYNC_LITERAL_ARGUMENT = enum.auto()
    START_LITERAL_ARGUMENT = enum.auto()
    LITERAL_ARGUMENT = enum.auto()
    END_LITERAL_ARGUMENT = enum.auto()
    ALMOST_DONE = enum.auto()


_TAG_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._")
_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset(b"0123456789")
MAX_TAG = 32
MAX_IMAP_ARGS = 3
_NO_SYNC_MARK = len(b"{1+}")


class _Step(enum.Enum):
    INVALID = enum.auto()
    DONE = enum.auto()
    NEXT = enum.auto()


class ImapParser:
    """IMAP: tag, command, up to three atoms / quoted strings / ``{N}`` / ``{N+}`` literals.

    A byte-level state machine because its quirks are part of nginx's behaviour: a quoted
    string cut by CRLF leaves the parser "quoted" for the next command, ``{0}`` swallows
    one byte, a byte after a literal other than SP/CR/LF/``{`` is dropped. ``quit`` is set
    when an invalid command ended in a non-synchronizing literal: nginx cannot resync.
    """

    def __init__(self, verbs: Collection[str]) -> None:
        # A machine passes the same frozenset for every connection: no copy then.
        self._verbs = verbs if isinstance(verbs, frozenset) else frozenset(verbs)
        self.state = _Imap.START
        self.tag = b""
        self.quit = False
        self._verb = ""
        self._args: list[bytes] = []
        self._tag_start = 0
        self._cmd_start = 0
        self._arg_start = 0
        self._quoted = False
        self._backslash = False
        self._literal_len = 0
        self._no_sync = False

    @property
    def in_continuation(self) -> bool:
        """nginx's ``s->state != 0`` after a command: an AUTHENTICATE exchange goes on."""
        return self.state is not _Imap.START

    def reset(self) -> None:
        self.state = _Imap.START

    def resume_argument(self, pos: int) -> None:
        """The next line is a SASL response read as one argument (tag preserved)."""
        self._arg_start = pos

    def parse(self, buf: CommandBuffer) -> Command | Parse:
        data = buf.data
        p = buf.pos
        while p < len(data):
            if self.state is _Imap.LITERAL_ARGUMENT:
                p = self._literal_bytes(data, p)
                continue
            step = self._STEPS[self.state](self, data, p)
            if step is None:
                p += 1
            elif step is _Step.INVALID:
                return self._invalid(buf, p)
            elif step is _Step.NEXT:
                buf.pos = p + 1
                return Parse.NEXT
            else:
                buf.pos = p + 1
                return self._done()
        buf.pos = p
        return Parse.AGAIN

    def _done(self) -> Command:
        self.state = _Imap.ARGUMENT if self._verb == "AUTHENTICATE" else _Imap.START
        command = Command(self._verb, self._args, tag=self.tag)
        self._args = []
        return command

    def _invalid(self, buf: CommandBuffer, p: int) -> Parse:
        self.state = _Imap.INVALID
        self._quoted = self._backslash = self._no_sync = False
        self._literal_len = 0
        self._args = []
        data = buf.data
        lf = data.find(b"\n", p)
        if lf < 0:
            buf.pos = len(data)
            return Parse.AGAIN
        self.state = _Imap.START
        buf.pos = lf + 1
        if lf > _NO_SYNC_MARK:
            q = lf - 1
            if data[q] == CR:
                q -= 1
            if data[q] == ord("}") and data[q - 1] == ord("+"):
                self.quit = True
        return Parse.INVALID

    def _literal_bytes(self, data: bytearray, p: int) -> int:
        wanted = max(self._literal_len, 1)  # {0} still takes one byte, as nginx
        available = len(data) - p
        if available < wanted:
            self._literal_len -= available
            return len(data)
        end = p + wanted
        self._args.append(bytes(data[self._arg_start : end]))
        self._literal_len = 0
        self.state = _Imap.END_LITERAL_ARGUMENT
        return end

    def _push_argument(self, data: bytearray, p: int) -> None:
        arg = bytes(data[self._arg_start : p])
        if self._backslash:
            arg = _unescape(arg)
            self._backslash = False
        self._args.append(arg)

    def _may_add_argument(self) -> bool:
        return len(self._args) < MAX_IMAP_ARGS

    # One method per nginx state; None means "byte consumed, go on".

    def _start(self, data: bytearray, p: int) -> _Step | None:
        self._tag_start = p
        self.state = _Imap.TAG
        return self._tag_byte(data, p)

    def _tag_byte(self, data: bytearray, p: int) -> _Step | None:
        ch = data[p]
        if ch == SP:
            self.tag = bytes(data[self._tag_start : p + 1])
            self.state = _Imap.SPACES_BEFORE_COMMAND
            return None
        if ch not in _TAG_CHARS or p - self._tag_start >= MAX_TAG:
            return _Step.INVALID
        return None

    def _still_invalid(self, data: bytearray, p: int) -> _Step | None:
        return _Step.INVALID

    def _spaces_before_command(self, data: bytearray, p: int) -> _Step | None:
        ch = data[p]
        if ch in (CR, LF):
            return _Step.INVALID
        if ch != SP:
            self._cmd_start = p
            self.state = _Imap.COMMAND
        return None

    def _command_byte(self, data: bytearray, p: int) -> _Step | None:
        ch = data[p]
        if ch in (SP, CR, LF):
            verb = bytes(data[self._cmd_start : p]).upper().decode("latin-1")
            if verb not in self._verbs:
                return _Step.INVALID
            self._verb = verb
            return self._end_of_word(ch)
        return None if ch in _LETTERS else _Step.INVALID

    def _end_of_word(self, ch: int) -> _Step | None:
        if ch == LF:
            return _Step.DONE
        self.state = _Imap.ALMOST_DONE if ch == CR else _Imap.SPACES_BEFORE_ARGUMENT
        return None

    def _spaces_before_argument(self, data: bytearray, p: int) -> _Step | None:
        ch = data[p]
        if ch in (SP, CR, LF):
            return None if ch == SP else self._end_of_word(ch)
        if not self._may_add_argument():
            return _Step.INVALID
        if ch == ord('"'):
            self._quoted = True
            self._arg_start = p + 1
            self.state = _Imap.ARGUMENT
        elif ch == ord("{"):
            self.state = _Imap.LITERAL
        else:
            self._arg_start = p
            self.state = _Imap.ARGUMENT
        return None

    def _argument_byte(self, data: bytearray, p: int) -> _Step | None:
        ch = data[p]
        if ch == SP and self._quoted:
            return None
        if ch == ord('"'):
            if not self._quoted:
                return None
            self._quoted = False
            self._push_argument(data, p)
            self.state = _Imap.SPACES_BEFORE_ARGUMENT
            return None
        if ch in (SP, CR, LF):
            # A quoted string cut by CR/LF ends here and nginx leaves "quoted" set.
            self._push_argument(data, p)
            return self._end_of_word(ch)
        if ch == ord("\\") and self._quoted:
            self._backslash = True
            self.state = _Imap.BACKSLASH
        return None

    def _backslash_byte(self, data: bytearray, p: int) -> _Step | None:
        if data[p] in (CR, LF):
            return _Step.INVALID
        self.state = _Imap.ARGUMENT
        return None

    def _literal_length(self, data: bytearray, p: int) -> _Step | None:
        ch = data[p]
        if ch in _DIGITS:
            self._literal_len = (self._literal_len * 10 + ch - ord("0")) & _U64
        elif ch == ord("}"):
            self.state = _Imap.START_LITERAL_ARGUMENT
        elif ch == ord("+"):
            self.state = _Imap.NO_SYNC_LITERAL_ARGUMENT
        else:
            return _Step.INVALID
        return None

    def _no_sync_literal(self, data: bytearray, p: int) -> _Step | None:
        if data[p] != ord("}"):
            return _Step.INVALID
        self._no_sync = True
        self.state = _Imap.START_LITERAL_ARGUMENT
        return None

    def _start_literal(self, data: bytearray, p: int) -> _Step | None:
        ch = data[p]
        if ch == CR:
            return None
        if ch != LF:
            return _Step.INVALID
        self._arg_start = p + 1
        self.state = _Imap.LITERAL_ARGUMENT
        if self._no_sync:
            self._no_sync = False
            return None
        return _Step.NEXT

    def _end_literal(self, data: bytearray, p: int) -> _Step | None:
        ch = data[p]
        if ch == ord("{"):
            if not self._may_add_argument():
                return _Step.INVALID
            self.state = _Imap.LITERAL
            return None
        if ch in (CR, LF):
            return self._end_of_word(ch)
        self.state = _Imap.SPACES_BEFORE_ARGUMENT  # the byte itself is dropped, as nginx
        return None

    def _almost_done(self, data: bytearray, p: int) -> _Step | None:
        return _Step.DONE if data[p] == LF else _Step.INVALID

    _STEPS = {
        _Imap.START: _start,
        _Imap.TAG: _tag_byte,
        _Imap.INVALID: _still_invalid,
        _Imap.SPACES_BEFORE_COMMAND: _spaces_before_command,
        _Imap.COMMAND: _command_byte,
        _Imap.SPACES_BEFORE_ARGUMENT: _spaces_before_argument,
        _Imap.ARGUMENT: _argument_byte,
        _Imap.BACKSLASH: _backslash_byte,
        _Imap.LITERAL: _literal_length,
        _Imap.NO_SYNC_LITERAL_ARGUMENT: _no_sync_literal,
        _Imap.START_LITERAL_ARGUMENT: _start_literal,
        _Imap.END_LITERAL_ARGUMENT: _end_literal,
        _Imap.ALMOST_DONE: _almost_done,
    }


def _unescape(arg: bytes) -> bytes:
    """Drop each backslash and keep the byte after it (nginx's in-place copy)."""
    out = bytearray()
    i = 0
    while i < len(arg):
        if arg[i] == ord("\\"):
            i += 1
            if i == len(arg):
                break
        out.append(arg[i])
        i += 1
    return bytes(out)
