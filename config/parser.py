"""Reading files and dispatching their statements to directive rows (``ngx_conf_parse``).

``include`` works in any block: a pattern with ``*?[`` is globbed (sorted, and no match is
fine), a plain name must exist. Relative names resolve against the main configuration
file's folder, nginx's ``conf_prefix``, whichever file holds the ``include``.
"""

from __future__ import annotations

import enum
import errno
import glob
import os

from mailgate.config.directives import Call, Level, ParseState
from mailgate.config.errors import ConfigError
from mailgate.config.lexer import COMMAND_LINE, End, Lexer, Statement, decode
from mailgate.config.model import ConfigFile, Source
from mailgate.config.registry import DIRECTIVES
from mailgate.config.setters import conf_path

# Deeper nesting can only be an include loop; nginx would run out of descriptors.
MAX_INCLUDE_DEPTH = 32
GLOB_CHARS = frozenset("*?[")


class Kind(enum.Enum):
    """What is being read: nginx's parse_file, parse_block, parse_param."""

    FILE = "file"
    BLOCK = "block"
    PARAM = "param"


class Parser:
    """Feeds statements from the current file to the directive rows."""

    def __init__(self, state: ParseState) -> None:
        self.state = state
        self.lexer = Lexer(b"", COMMAND_LINE)
        self.files: dict[str, ConfigFile] = {}

    def parse_file(self, path: str, level: Level, includer: Call | None) -> None:
        data = self._read(path, includer)
        self.files.setdefault(path, ConfigFile(path, decode(data)))
        outer = self.lexer
        self.lexer = Lexer(data, path)
        try:
            self._parse(level, Kind.FILE)
        finally:
            self.lexer = outer

    def parse_param(self, text: str, level: Level) -> None:
        """The text of ``-g``: main-level directives, no blocks."""
        self.lexer = Lexer(text.encode("utf-8", "surrogateescape"), COMMAND_LINE)
        self._parse(level, Kind.PARAM)

    def parse_block(self, level: Level) -> None:
        self._parse(level, Kind.BLOCK)

    def skip_block(self) -> None:
        """Read to the matching ``}``, checking only the syntax."""
        depth = 1
        while depth:
            statement = self.lexer.next_statement()
            if statement.end is End.BLOCK_START:
                depth += 1
            elif statement.end is End.BLOCK_END:
                depth -= 1
            elif statement.end is End.EOF:
                raise self.lexer.error('unexpected end of file, expecting "}"')

    def include(self, call: Call, pattern: str) -> None:
        if self.state.include_depth >= MAX_INCLUDE_DEPTH:
            raise call.error(f'too deep nesting of "include" (more than {MAX_INCLUDE_DEPTH})')
        full = conf_path(call, pattern)
        names = sorted(glob.glob(full)) if GLOB_CHARS & set(full) else [full]
        self.state.include_depth += 1
        try:
            for name in names:
                self.parse_file(name, call.level, call)
        finally:
            self.state.include_depth -= 1

    def _read(self, path: str, includer: Call | None) -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as err:
            code = err.errno or errno.EIO
            call = "pread()" if code == errno.EISDIR else "open()"
            message = f'{call} "{path}" failed ({code}: {os.strerror(code)})'
        except ValueError:  # a NUL byte in the name
            message = f'open() "{path}" failed ({errno.EINVAL}: {os.strerror(errno.EINVAL)})'
        if includer is None:
            raise ConfigError(message, path, 0)
        raise includer.error(message)

    def _parse(self, level: Level, kind: Kind) -> None:
        while True:
            statement = self.lexer.next_statement()
            if statement.end is End.BLOCK_END:
                if kind is not Kind.BLOCK:
                    raise self.lexer.error('unexpected "}"')
                return
            if statement.end is End.EOF:
                if kind is Kind.BLOCK:
                    raise self.lexer.error('unexpected end of file, expecting "}"')
                return
            if statement.end is End.BLOCK_START and kind is Kind.PARAM:
                raise self.lexer.error("block directives are not supported in -g option")
            self._dispatch(level, statement)

    def _dispatch(self, level: Level, statement: Statement) -> None:
        name, args = statement.words[0], statement.words[1:]
        source = Source(self.lexer.path, statement.line)
        rows = DIRECTIVES.get(name)
        if rows is None:
            raise ConfigError(f'unknown directive "{name}"', source.path, source.line)
        for row in rows:
            if not row.contexts & level.context:
                continue
            call = Call(name, args, source, level, self.state, self)
            if not row.arity.block and statement.end is not End.SEMICOLON:
                raise call.error(f'directive "{name}" is not terminated by ";"')
            if row.arity.block and statement.end is not End.BLOCK_START:
                raise call.error(f'directive "{name}" has no opening "{{"')
            if not row.arity.accepts(len(args)):
                raise call.error(f'invalid number of arguments in "{name}" directive')
            row.setter(call, row.field)
            return
        raise ConfigError(f'"{name}" directive is not allowed here', source.path, source.line)
