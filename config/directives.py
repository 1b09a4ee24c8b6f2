"""Directive rows and what a setter gets to work with (nginx's ``ngx_command_t``).

A row says where a directive may appear, how many arguments it takes, and which setter
stores it into which field of the current ``Level``. A ``Level`` is one block's directives as
written (nginx's srv_conf before merging): a field missing from ``values`` is nginx's UNSET.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailgate.config.errors import ConfigError
from mailgate.config.lexer import COMMAND_LINE
from mailgate.config.model import Listen, ServerConfig, Source

# nginx's NGX_CONF_MAX_ARGS: the most arguments a fixed-arity directive is checked against.
MAX_ARGS = 8


class Context(enum.Flag):
    """Where a directive may appear (NGX_MAIN_CONF, NGX_EVENT_CONF, NGX_MAIL_*_CONF)."""

    MAIN = enum.auto()
    EVENTS = enum.auto()
    MAIL = enum.auto()
    SERVER = enum.auto()


MAIL_OR_SERVER = Context.MAIL | Context.SERVER
ANY = Context.MAIN | Context.EVENTS | Context.MAIL | Context.SERVER


@dataclass(frozen=True, slots=True)
class Arity:
    """How many arguments a directive takes, after its name (``most`` None: no limit)."""

    least: int
    most: int | None
    block: bool = False

    def accepts(self, count: int) -> bool:
        if count < self.least:
            return False
        return self.most is None or count <= min(self.most, MAX_ARGS - 1)


TAKE1 = Arity(1, 1)
TAKE2 = Arity(2, 2)
TAKE12 = Arity(1, 2)
FLAG = Arity(1, 1)
MORE1 = Arity(1, None)
BLOCK = Arity(0, 0, block=True)


@dataclass(slots=True)
class Level:
    """The directives written in one block, before merging with the enclosing block."""

    context: Context
    source: Source
    values: dict[str, object] = field(default_factory=dict)
    # Where each field was set, for checks that name the directive's line (starttls ...).
    sources: dict[str, Source] = field(default_factory=dict)

    def get(self, name: str, default: object = None) -> object:
        return self.values.get(name, default)


@dataclass(slots=True)
class ServerLevel:
    """A ``server {}`` block: its directives and its listening addresses."""

    level: Level
    listens: list[Listen] = field(default_factory=list)


class BlockParser(Protocol):
    """What block directives (events, mail, server, http) need from the parser."""

    def parse_block(self, level: Level) -> None: ...

    def skip_block(self) -> None: ...

    def include(self, call: Call, pattern: str) -> None: ...


@dataclass(slots=True)
class ParseState:
    """Everything a load accumulates beyond the levels themselves."""

    conf_prefix: str  # folder of the main configuration file: relative includes and certs
    prefix: str  # for pid and error_log
    main: Level
    events: Level | None = None
    mail: Level | None = None
    servers: list[ServerLevel] = field(default_factory=list)
    built: list[ServerConfig] = field(default_factory=list)  # merged when mail {} closes
    skipped_blocks: set[str] = field(default_factory=set)  # http, stream
    warnings: list[str] = field(default_factory=list)
    include_depth: int = 0

    def all_listens(self) -> list[Listen]:
        return [lst for srv in self.servers for lst in srv.listens]


@dataclass(slots=True)
class Call:
    """One directive being applied: its words, its place, the level it writes to."""

    name: str
    args: tuple[str, ...]
    source: Source
    level: Level
    state: ParseState
    parser: BlockParser

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, self.source.path, self.source.line)

    def warn(self, message: str) -> None:
        self.state.warnings.append(f"{message} {where(self.source)}")

    def duplicate(self) -> ConfigError:
        return self.error(f'"{self.name}" directive is duplicate')

    def invalid(self, reason: str) -> ConfigError:
        """nginx's generic ``"name" directive <reason>`` for a setter's returned string."""
        return self.error(f'"{self.name}" directive {reason}')

    def set_once(self, key: str, value: object) -> None:
        """Store a scalar, refusing a second one at the same level (nginx's UNSET check)."""
        if key in self.level.values:
            raise self.duplicate()
        self.store(key, value)

    def store(self, key: str, value: object) -> None:
        self.level.values[key] = value
        self.level.sources[key] = self.source


def where(source: Source) -> str:
    """nginx's location suffix: ``in FILE:LINE``, or ``in command line`` for -g."""
    if source.path == COMMAND_LINE:
        return "in command line"
    return f"in {source.path}:{source.line}"


Setter = Callable[[Call, str], None]


@dataclass(frozen=True, slots=True)
class Directive:
    """One row of a module's directive table."""

    name: str
    contexts: Context
    arity: Arity
    setter: Setter
    field: str = ""
