"""``error_log target [level]``, shared by the main level and mail/server (``ngx_log_set_log``)."""

from __future__ import annotations

from mailgate.config.directives import Call
from mailgate.config.model import LogTarget
from mailgate.config.setters import full_path, parse_size

LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
# Debug masks select subsystems in a debug build; mailgate logs them all at "debug".
DEBUG_MASKS = (
    "debug_core",
    "debug_alloc",
    "debug_mutex",
    "debug_event",
    "debug_http",
    "debug_mail",
    "debug_stream",
)


def _level(call: Call, words: tuple[str, ...]) -> str:
    level: str | None = None
    debug = False
    for word in words:
        if word in LEVELS:
            if level is not None:
                raise call.error(f'duplicate log level "{word}"')
            level = word
        elif word in DEBUG_MASKS:
            debug = True
        else:
            raise call.error(f'invalid log level "{word}"')
    if level is None:
        level = "debug" if debug else "error"
    return level


def _target(call: Call, word: str) -> str:
    if word == "stderr" or word.startswith("syslog:"):
        return word
    if word.startswith("memory:"):
        if parse_size(word[len("memory:") :]) is None:
            raise call.error(f'invalid buffer size "{word[len("memory:") :]}"')
        return word
    return full_path(call.state.prefix, word)


def log_target(call: Call) -> LogTarget:
    """The directive's target, made absolute against the prefix when it is a file."""
    return LogTarget(_target(call, call.args[0]), _level(call, call.args[1:]))


def error_log(call: Call, field: str) -> None:
    """Several ``error_log`` lines at one level all apply (nginx chains them)."""
    current: tuple[LogTarget, ...] = call.level.get(field, ())  # type: ignore[assignment]
    call.store(field, (*current, log_target(call)))
