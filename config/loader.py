"""``load()``: one configuration file (plus ``-g`` text) to a validated ``Config``.

As nginx, the ``-g`` directives are read before the file, so a directive given in both is
reported as a duplicate at its place in the file.
"""

from __future__ import annotations

import os

from mailgate.config.directives import Context, Level, ParseState
from mailgate.config.model import Config, LogTarget, MainConfig, Source
from mailgate.config.parser import Parser

DEFAULT_PID = "/run/mailgate.pid"
DEFAULT_ERROR_LOG = (LogTarget("/var/log/mailgate/error.log", "error"),)


def resolve_worker_processes() -> int:
    """``worker_processes auto``: the CPUs this process may run on (affinity-aware)."""
    return len(os.sched_getaffinity(0))


def _main_config(state: ParseState) -> MainConfig:
    main = state.main.values
    events = state.events.values if state.events is not None else {}
    workers = main.get("worker_processes", 1)
    auto = workers == "auto"
    return MainConfig(
        worker_processes=resolve_worker_processes() if auto else workers,  # type: ignore[arg-type]
        worker_processes_auto=auto,
        worker_connections=events.get("worker_connections", 512),  # type: ignore[arg-type]
        multi_accept=events.get("multi_accept", False),  # type: ignore[arg-type]
        worker_rlimit_nofile=main.get("worker_rlimit_nofile"),  # type: ignore[arg-type]
        worker_shutdown_timeout=main.get("worker_shutdown_timeout"),  # type: ignore[arg-type]
        daemon=main.get("daemon", True),  # type: ignore[arg-type]
        master_process=main.get("master_process", True),  # type: ignore[arg-type]
        pid=main.get("pid", DEFAULT_PID),  # type: ignore[arg-type]
        error_log=main.get("error_log", DEFAULT_ERROR_LOG),  # type: ignore[arg-type]
        user=main.get("user"),  # type: ignore[arg-type]
        env=main.get("env", ()),  # type: ignore[arg-type]
        metrics_listen=main.get("metrics_listen"),  # type: ignore[arg-type]
    )


def load(path: str, prefix: str | None = None, extra: str | None = None) -> Config:
    """Read, check and type a whole configuration; raises ``ConfigError`` only.

    ``prefix`` anchors relative ``pid`` and ``error_log`` paths (default: the folder of
    ``path``); relative includes and certificate paths use the folder of ``path``.
    """
    full = os.path.abspath(path)
    conf_prefix = os.path.dirname(full)
    state = ParseState(
        conf_prefix=conf_prefix,
        prefix=os.path.abspath(prefix) if prefix else conf_prefix,
        main=Level(Context.MAIN, Source(full, 0)),
    )
    parser = Parser(state)
    if extra:
        parser.parse_param(extra, state.main)
    parser.parse_file(full, state.main, None)
    return Config(
        path=full,
        prefix=state.prefix,
        main=_main_config(state),
        servers=tuple(state.built),
        files=tuple(parser.files.values()),
        warnings=tuple(state.warnings),
    )
