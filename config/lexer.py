"""nginx's configuration tokenizer: statements of words ended by ``;``, ``{``, ``}`` or the end.

It follows ``ngx_conf_read_token`` (src/core/ngx_conf_file.c) byte for byte, including its
quirks, because an admin's nginx.conf must split into the same words here as in nginx:

* a word ends at whitespace, ``;`` or ``{``; a ``}`` only counts at the start of a word;
* ``#`` starts a comment only at the start of a word;
* a quoted word must be followed by whitespace, ``;``, ``{`` or ``)``;
* ``\\"``, ``\\'`` and ``\\\\`` unescape to the character, ``\\n``, ``\\r``, ``\\t`` to the control
  character, and any other backslash is kept verbatim;
* ``${`` does not end a word (nginx's variables);
* a word (counted from its first byte, or from the end of the previous statement) may not
  reach 4096 bytes while the file goes on: nginx's read buffer is that big.

The lexer works on bytes, as nginx does, and decodes each word as UTF-8 with
``surrogateescape`` so that any byte sequence round-trips.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailgate.config.errors import ConfigError

# nginx's NGX_CONF_BUFFER: the longest stretch the reader can hold while a word goes on.
BUFFER_SIZE = 4096
COMMAND_LINE = "command line"

_SPACE = frozenset(b" \t\r\n")
_UNESCAPE = {ord('"'): b'"', ord("'"): b"'", ord("\\"): b"\\"}
_CONTROL = {ord("t"): b"\t", ord("r"): b"\r", ord("n"): b"\n"}


class End(enum.Enum):
    """What ended a statement (nginx: NGX_OK, NGX_CONF_BLOCK_START/DONE, FILE_DONE)."""

    SEMICOLON = ";"
    BLOCK_START = "{"
    BLOCK_END = "}"
    EOF = ""


@dataclass(frozen=True, slots=True)
class Statement:
    """The words of one directive and what ended it; ``line`` is where it ended."""

    words: tuple[str, ...]
    end: End
    line: int


def decode(raw: bytes) -> str:
    """Bytes of a file or word as text that encodes back to the same bytes."""
    return raw.decode("utf-8", "surrogateescape")


def _unescape(raw: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == ord("\\") and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt in _UNESCAPE:
                out += _UNESCAPE[nxt]
                i += 2
                continue
            if nxt in _CONTROL:
                out += _CONTROL[nxt]
                i += 2
                continue
        out.append(byte)
        i += 1
    return decode(bytes(out))


class Lexer:
    """Reads statements from one file's bytes, or from the text of ``-g``."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path
        self.pos = 0
        self.line = 1
        # The -g text is read in one piece: no buffer limit, other end-of-input message.
        self.is_param = path == COMMAND_LINE

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, self.path, self.line)

    def next_statement(self) -> Statement:
        data = self.data
        size = len(data)
        words: list[str] = []
        start = self.pos
        start_line = self.line
        need_space = quoted = s_quoted = d_quoted = variable = comment = False
        last_space = True

        while True:
            if self.pos >= size:
                if words or not last_space:
                    if self.is_param:
                        raise self.error('unexpected end of parameter, expecting ";"')
                    raise self.error('unexpected end of file, expecting ";" or "}"')
                return Statement(tuple(words), End.EOF, self.line)

            if not self.is_param and self.pos - start >= BUFFER_SIZE:
                self._too_long(start, start_line, d_quoted, s_quoted)

            ch = data[self.pos]
            self.pos += 1

            if ch == ord("\n"):
                self.line += 1
                comment = False
            if comment:
                continue
            if quoted:
                quoted = False
                continue

            if need_space:
                if ch in _SPACE:
                    last_space = True
                    need_space = False
                    continue
                if ch == ord(";"):
                    return Statement(tuple(words), End.SEMICOLON, self.line)
                if ch == ord("{"):
                    return Statement(tuple(words), End.BLOCK_START, self.line)
                if ch != ord(")"):
                    raise self.error(f'unexpected "{chr(ch)}"')
                # nginx lets ")" follow a quoted word (for "if (...)") and starts a word with it.
                last_space = True
                need_space = False

            if last_space:
                if ch in _SPACE:
                    continue
                start = self.pos - 1
                start_line = self.line
                if ch in (ord(";"), ord("{")):
                    if not words:
                        raise self.error(f'unexpected "{chr(ch)}"')
                    end = End.BLOCK_START if ch == ord("{") else End.SEMICOLON
                    return Statement(tuple(words), end, self.line)
                if ch == ord("}"):
                    if words:
                        raise self.error('unexpected "}"')
                    return Statement((), End.BLOCK_END, self.line)
                if ch == ord("#"):
                    comment = True
                    continue
                last_space = False
                if ch == ord("\\"):
                    quoted = True
                elif ch == ord('"'):
                    start += 1
                    d_quoted = True
                elif ch == ord("'"):
                    start += 1
                    s_quoted = True
                continue

            if ch == ord("{") and variable:
                continue
            variable = False
            if ch == ord("\\"):
                quoted = True
                continue
            if ch == ord("$"):
                variable = True
                continue

            found = False
            if d_quoted:
                if ch == ord('"'):
                    d_quoted = False
                    need_space = found = True
            elif s_quoted:
                if ch == ord("'"):
                    s_quoted = False
                    need_space = found = True
            elif ch in _SPACE or ch in (ord(";"), ord("{")):
                last_space = found = True

            if found:
                words.append(_unescape(data[start : self.pos - 1]))
                if ch == ord(";"):
                    return Statement(tuple(words), End.SEMICOLON, self.line)
                if ch == ord("{"):
                    return Statement(tuple(words), End.BLOCK_START, self.line)

    def _too_long(self, start: int, start_line: int, d_quoted: bool, s_quoted: bool) -> None:
        self.line = start_line
        if d_quoted or s_quoted:
            quote = '"' if d_quoted else "'"
            raise self.error(
                f'too long parameter, probably missing terminating "{quote}" character'
            )
        head = decode(self.data[start : start + 10])
        raise self.error(f'too long parameter "{head}..." started')
