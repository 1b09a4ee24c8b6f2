"""The start sequence once the configuration is good: log, bind, detach, pid file, run.

The order is nginx's: bind before detaching, so ``bind() ... failed`` reaches the terminal
and the exit status; write the pid file after detaching, so it names the daemon. The launcher
exits only once that file is written (see ``daemon.daemonize``).
"""

from __future__ import annotations

import os
import resource
import sys
from typing import TYPE_CHECKING

from mailgate.config import model
from mailgate.master import about, daemon, generation, listeners, proctitle, upgrade, zones
from mailgate.master.arbiter import Arbiter, Reloader
from mailgate.master.log import ErrorLog, LogOpenError, os_error
from mailgate.master.metrics import MetricsError, supervisor
from mailgate.master.metrics import directory as metrics_directory
from mailgate.master.metrics import events as metric_events
from mailgate.master.pidfile import PidFile
from mailgate.worker.process import Worker

if TYPE_CHECKING:  # annotations only: the contexts are built in cli.Paths.build()
    from mailgate.worker.tls.context import Contexts


def start(
    config: model.Config,
    contexts: Contexts,
    *,
    reload: Reloader,
    early: ErrorLog,
    early_log: str,
) -> int:
    """Run mailgate with ``config`` until it is stopped; returns the process exit code.

    Started by an upgrading master (``MAILGATE_FDS`` set), mailgate takes over the inherited
    listeners, binds only what they lack, stays in the foreground (its parent is the old
    master, not a terminal) and writes the pid file the old master moved aside. ``early``
    is the log of the command line (``-e``, or the terminal): it reports an error log that
    cannot be opened.
    """
    try:
        log = ErrorLog.from_config(config.main.error_log, default=early_log)
    except LogOpenError as err:
        early.emerg(str(err))  # nginx: one line on the terminal, and exit 1
        return 1
    inherited = upgrade.inherited_sockets(os.environ, log)
    try:
        first = generation.prepare(config, contexts, log, inherited=inherited or ())
    except generation.PrepareError as err:
        log.emerg(str(err))
        return 1
    # Bound before detaching, like the mail listeners, so a bind failure reaches the terminal.
    metrics_server = supervisor.MetricsServer(log)
    try:
        metrics_server.configure(config.main.metrics_listen)
    except MetricsError as err:
        log.emerg(str(err))
        listeners.close_all(first.listeners, unlink=inherited is None)
        return 1
    if inherited is not None:
        metric_events.upgrade_done(True)
    ready = None
    if config.main.daemon and inherited is None:
        ready = daemon.daemonize()
    if config.main.master_process:
        # Titled before the pid file exists, so whoever reads the pid sees a master.
        proctitle.set_title("mailgate: master process " + " ".join(sys.argv))
    pid = None if config.main.pid is None else PidFile(config.main.pid)
    if pid is not None:
        try:
            pid.write(os.getpid())
        except OSError as err:
            log.emerg(f'open() "{pid.path}" failed ({os_error(err)})')
            listeners.close_all(first.listeners, unlink=inherited is None)
            if ready is not None:
                ready(False)
            return 1
    if ready is not None:
        ready(True)  # listening, detached, pid file written: the launcher may exit 0
    log.console = False
    _log_start(log)
    zones.started(log)
    arbiter: Arbiter | None = None
    try:
        if not config.main.master_process:
            return _run_single(first, log)
        arbiter = Arbiter(
            first,
            log,
            reload=reload,
            argv=upgrade.command_line(),
            # nginx counts a new binary as daemonized: it has no terminal to send WINCH.
            daemonized=config.main.daemon or inherited is not None,
            pidfile=pid,
            old_master=_old_master() if inherited is not None else 0,
            metrics=metrics_server,
        )
        return arbiter.run()
    finally:
        metrics_server.stop()
        if arbiter is None or not arbiter.upgrading:
            metrics_directory.release_directory()  # a new binary's workers still write there
        zones.release()  # cold stop: unlink the shared zones unless a new master took them
        if pid is not None:
            pid.remove()
        log.notice("exit")


def _run_single(first: generation.Generation, log: ErrorLog) -> int:
    # ``master_process off`` (nginx's debugging mode): one loop in this process, no respawn,
    # no reload; QUIT and TERM work as in a worker.
    worker = Worker(
        first.config,
        first.listeners,
        log,
        first.contexts,
        server_logs=first.server_logs.by_index,
    )
    worker.init_process(single=True)
    try:
        return worker.run()
    finally:
        listeners.close_all(first.listeners)


def _old_master() -> int:
    # The upgrading master is our parent; if it already died we were reparented to init.
    parent = os.getppid()
    return parent if parent != 1 else 0


def _log_start(log: ErrorLog) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log.notice(about.version())
    log.notice(about.os_text())
    log.notice(f"getrlimit(RLIMIT_NOFILE): {soft}:{hard}")
