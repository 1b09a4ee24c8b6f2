"""Main-level and ``events {}`` directives (nginx's core, errlog, events and conf modules).

mailgate honours the process-model directives. So that an admin's whole nginx.conf loads
unchanged, it also accepts what such a file usually holds besides ``mail {}``:

* ``http {}`` and ``stream {}`` are checked for balanced syntax, skipped, and reported as a
  warning. Their contents are not interpreted, so their ``include`` lines are not followed.
* ``load_module`` is skipped: silently for any module, since the directives such modules add
  live in the skipped blocks, but with a warning for nginx's mail module, which mailgate is.
* Main-level tuning directives that mean nothing to mailgate (``worker_cpu_affinity``,
  ``pcre_jit``...) are accepted with a warning; the ``events {}`` tuning ones
  (``use``, ``accept_mutex``...) silently. ``multi_accept`` is honoured.
"""

from __future__ import annotations

from collections.abc import Callable

from mailgate.config import logs, setters
from mailgate.config.directives import (
    ANY,
    BLOCK,
    FLAG,
    MORE1,
    TAKE1,
    TAKE12,
    Call,
    Context,
    Directive,
    Level,
)
from mailgate.config.setters import atoi, full_path

MAIN = Context.MAIN
EVENTS = Context.EVENTS

# Main-level nginx directives that mailgate accepts and ignores, with a warning.
IGNORED_MAIN = (
    "worker_cpu_affinity",
    "worker_priority",
    "worker_rlimit_core",
    "working_directory",
    "lock_file",
    "timer_resolution",
    "thread_pool",
    "ssl_engine",
    "debug_points",
    "google_perftools_profiles",
    "ssl_object_cache_inheritable",
)
IGNORED_MAIN_FLAGS = ("pcre_jit", "quic_bpf")
# events {} tuning that has no meaning for mailgate's worker loop: accepted silently.
IGNORED_EVENTS = ("use", "accept_mutex_delay", "debug_connection", "worker_aio_requests")
IGNORED_EVENTS_FLAGS = ("accept_mutex",)

MAIL_MODULE_FILES = ("ngx_mail_module.so",)

# Who the workers run as when the master is root and no ``user`` is given: nginx's NGX_USER,
# and the group its configure picks (``nobody`` if there is one, else Debian's ``nogroup``).
# Workers never run as root unless a ``user`` says so.
DEFAULT_USER = "nobody"
DEFAULT_GROUPS = ("nobody", "nogroup")


def worker_user(
    configured: tuple[str, str | None] | None,
    euid: int,
    group_exists: Callable[[str], bool],
) -> tuple[str, str | None] | None:
    """``(user, group)`` the workers switch to, or None to keep the master's user.

    Only root can switch users; another master keeps its user, as nginx does.
    """
    if euid != 0:
        return None
    if configured is not None:
        return configured
    group = next((g for g in DEFAULT_GROUPS if group_exists(g)), DEFAULT_GROUPS[0])
    return DEFAULT_USER, group


def include(call: Call, field: str) -> None:
    call.parser.include(call, call.args[0])


def worker_processes(call: Call, field: str) -> None:
    if field in call.level.values:
        raise call.duplicate()
    word = call.args[0]
    if word == "auto":
        call.store(field, "auto")
        return
    count = atoi(word)
    if count is None:
        raise call.invalid("invalid value")
    call.store(field, count)


def worker_connections(call: Call, field: str) -> None:
    if field in call.level.values:
        raise call.duplicate()
    count = atoi(call.args[0])
    if count is None:
        raise call.error(f'invalid number "{call.args[0]}"')
    call.store(field, count)


def pid(call: Call, field: str) -> None:
    word = call.args[0]
    call.set_once(field, None if word == "off" else full_path(call.state.prefix, word))


def user(call: Call, field: str) -> None:
    group = call.args[1] if len(call.args) > 1 else None
    call.set_once(field, (call.args[0], group))


def env(call: Call, field: str) -> None:
    name, sep, value = call.args[0].partition("=")
    current: tuple[tuple[str, str | None], ...] = call.level.get(field, ())  # type: ignore[assignment]
    call.store(field, (*current, (name, value if sep else None)))


def events_block(call: Call, field: str) -> None:
    if call.state.events is not None:
        raise call.duplicate()
    level = Level(Context.EVENTS, call.source)
    call.state.events = level
    call.parser.parse_block(level)


def skipped_block(call: Call, field: str) -> None:
    """``http {}`` / ``stream {}``: syntax-checked, not interpreted."""
    if call.name in call.state.skipped_blocks:
        raise call.duplicate()
    call.state.skipped_blocks.add(call.name)
    call.parser.skip_block()
    call.warn(f'"{call.name}" block is ignored by mailgate')


def load_module(call: Call, field: str) -> None:
    if call.args[0].rsplit("/", 1)[-1] in MAIL_MODULE_FILES:
        call.warn('"load_module" of the mail module is ignored: mail is built into mailgate')


def ignored(call: Call, field: str) -> None:
    call.warn(f'"{call.name}" directive is ignored by mailgate')


def ignored_flag(call: Call, field: str) -> None:
    setters.parse_flag(call, call.args[0])
    call.warn(f'"{call.name}" directive is ignored by mailgate')


def _silent_flag(call: Call, field: str) -> None:
    setters.parse_flag(call, call.args[0])


DIRECTIVES = (
    Directive("include", ANY, TAKE1, include),
    Directive("daemon", MAIN, FLAG, setters.flag, "daemon"),
    Directive("master_process", MAIN, FLAG, setters.flag, "master_process"),
    Directive("worker_processes", MAIN, TAKE1, worker_processes, "worker_processes"),
    Directive("worker_rlimit_nofile", MAIN, TAKE1, setters.number, "worker_rlimit_nofile"),
    Directive("worker_shutdown_timeout", MAIN, TAKE1, setters.msec, "worker_shutdown_timeout"),
    Directive("pid", MAIN, TAKE1, pid, "pid"),
    Directive("error_log", MAIN, MORE1, logs.error_log, "error_log"),
    Directive("user", MAIN, TAKE12, user, "user"),
    Directive("env", MAIN, TAKE1, env, "env"),
    Directive("events", MAIN, BLOCK, events_block),
    Directive("http", MAIN, BLOCK, skipped_block),
    Directive("stream", MAIN, BLOCK, skipped_block),
    Directive("load_module", MAIN, TAKE1, load_module),
    Directive("worker_connections", EVENTS, TAKE1, worker_connections, "worker_connections"),
    Directive("multi_accept", EVENTS, FLAG, setters.flag, "multi_accept"),
    *(Directive(name, MAIN, MORE1, ignored) for name in IGNORED_MAIN),
    *(Directive(name, MAIN, FLAG, ignored_flag) for name in IGNORED_MAIN_FLAGS),
    *(Directive(name, EVENTS, MORE1, setters.ignore) for name in IGNORED_EVENTS),
    *(Directive(name, EVENTS, FLAG, _silent_flag) for name in IGNORED_EVENTS_FLAGS),
)
