"""``error_log target [level]``, shared by the main level and mail/server (``ngx_log_set_log``)."""

from __future__ import annotations

import string

from mailgate.config.addresses import URLError, parse_url
from mailgate.config.directives import Call
from mailgate.config.model import LogTarget, Syslog
from mailgate.config.setters import full_path

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

# RFC 3164 facility codes by nginx's names (ngx_syslog.c).
FACILITIES = {
    name: code
    for code, name in enumerate(
        [
            "kern",
            "user",
            "mail",
            "daemon",
            "auth",
            "intern",
            "lpr",
            "news",
            "uucp",
            "clock",
            "authpriv",
            "ftp",
            "ntp",
            "audit",
            "alert",
            "cron",
            "local0",
            "local1",
            "local2",
            "local3",
            "local4",
            "local5",
            "local6",
            "local7",
        ]
    )
}
SYSLOG_PORT = 514
NO_MEMORY_LOG = "mailgate was built without debug support"  # nginx's words for memory:
SYSLOG_TAG_MAX = 32
_TAG_CHARS = frozenset(string.ascii_letters + string.digits + "_")


class SyslogError(Exception):
    """A bad ``syslog:`` target; ``str()`` is nginx's message."""


def _syslog_server(value: str) -> tuple[int, str, int]:
    try:
        url = parse_url(value, default_port=SYSLOG_PORT)
    except URLError as err:
        raise SyslogError(f'{err} in syslog server "{value}"') from None
    addr = url.addrs[0]
    return addr.family, addr.host, addr.port


def parse_syslog(target: str) -> Syslog:
    """``syslog:server=...,facility=...,severity=...,tag=...,nohostname`` (ngx_syslog_parse_args).

    Raises ``SyslogError``; host names resolve here, once, as nginx resolves them at load.
    """
    values: dict[str, object] = {}
    server: tuple[int, str, int] | None = None
    for part in target.removeprefix("syslog:").split(","):
        key, sep, value = part.partition("=")
        if part == "nohostname":
            values["hostname"] = False
        elif not sep:
            raise SyslogError(f'unknown syslog parameter "{part}"')
        elif key == "server":
            if server is not None:
                raise SyslogError('duplicate syslog "server"')
            server = _syslog_server(value)
        elif key == "facility":
            if value not in FACILITIES:
                raise SyslogError(f'unknown syslog facility "{value}"')
            values["facility"] = FACILITIES[value]
        elif key == "severity":
            if value not in LEVELS:
                raise SyslogError(f'unknown syslog severity "{value}"')
            values["severity"] = LEVELS.index(value)
        elif key == "tag":
            if len(value) > SYSLOG_TAG_MAX:
                raise SyslogError(f"syslog tag length exceeds {SYSLOG_TAG_MAX}")
            if not value or not set(value) <= _TAG_CHARS:
                raise SyslogError('syslog "tag" only allows alphanumeric characters and underscore')
            values["tag"] = value
        else:
            raise SyslogError(f'unknown syslog parameter "{part}"')
    if server is None:
        raise SyslogError("no syslog server specified")
    family, host, port = server
    return Syslog(family, host, port, **values)  # type: ignore[arg-type]


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
    if word == "stderr":
        return word
    if word.startswith("syslog:"):
        try:
            parse_syslog(word)
        except SyslogError as err:
            raise call.error(str(err)) from None
        return word
    if word.startswith("memory:"):
        # nginx keeps a memory buffer only in a debug build; one without refuses the target
        # before reading its size (ngx_log_set_log). mailgate has no such build.
        raise call.error(NO_MEMORY_LOG)
    return full_path(call.state.prefix, word)


def log_target(call: Call) -> LogTarget:
    """The directive's target, made absolute against the prefix when it is a file."""
    return LogTarget(_target(call, call.args[0]), _level(call, call.args[1:]))


def error_log(call: Call, field: str) -> None:
    """Several ``error_log`` lines at one level all apply (nginx chains them)."""
    current: tuple[LogTarget, ...] = call.level.get(field, ())  # type: ignore[assignment]
    call.store(field, (*current, log_target(call)))
