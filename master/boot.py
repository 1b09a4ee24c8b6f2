"""The start sequence once the configuration is good: log, bind, detach, pid file, run.

The order is nginx's: bind before detaching, so ``bind() ... failed`` reaches the terminal
and the exit status; write the pid file after detaching, so it names the daemon.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Mapping

from mailgate.config import model
from mailgate.master import about, daemon, listeners, pidfile, proctitle
from mailgate.master.arbiter import Arbiter, Reloader
from mailgate.master.log import ErrorLog, os_error
from mailgate.worker.process import Listening, Worker


def start(
    config: model.Config,
    contexts: Mapping[int, object],
    *,
    reload: Reloader,
    early_log: str,
) -> int:
    """Run mailgate with ``config`` until it is stopped; returns the process exit code."""
    log, notes = ErrorLog.from_config(config.main.error_log, default=early_log)
    for note in notes:
        log.warn(note)
    try:
        listening = listeners.open_all(config, log)
    except listeners.BindError as err:
        log.emerg(str(err))
        return 1
    if config.main.daemon:
        daemon.daemonize()
    if config.main.master_process:
        # Titled before the pid file exists, so whoever reads the pid sees a master.
        proctitle.set_title("mailgate: master process " + " ".join(sys.argv))
    pid_path = config.main.pid
    if pid_path is not None:
        try:
            pidfile.write(pid_path, os.getpid())
        except OSError as err:
            log.emerg(f'open() "{pid_path}" failed ({os_error(err)})')
            listeners.close_all(listening)
            return 1
    log.console = False
    _log_start(log)
    try:
        if not config.main.master_process:
            return _run_single(config, listening, log, contexts)
        arbiter = Arbiter(
            config,
            listening,
            log,
            contexts=contexts,
            reload=reload,
            argv=sys.argv,
            daemonized=config.main.daemon,
        )
        return arbiter.run()
    finally:
        if pid_path is not None:
            pidfile.remove(pid_path)
        log.notice("exit")


def _run_single(
    config: model.Config,
    listening: list[Listening],
    log: ErrorLog,
    contexts: Mapping[int, object],
) -> int:
    # ``master_process off`` (nginx's debugging mode): one loop in this process, no respawn,
    # no reload; QUIT and TERM work as in a worker.
    worker = Worker(config, listening, log, contexts)
    worker.init_process(single=True)
    try:
        return worker.run()
    finally:
        listeners.close_all(listening)


def _log_start(log: ErrorLog) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log.notice(about.version())
    log.notice(about.os_text())
    log.notice(f"getrlimit(RLIMIT_NOFILE): {soft}:{hard}")
