"""The master process loop: signals in, workers out.

Shape from gunicorn's Arbiter, meanings from nginx: wait for a signal or a timer, dispatch
``handle_<name>()``, reap children, bring the worker count back to ``worker_processes``.
Signal handlers only queue; every action, logging included, happens in the loop.
"""

from __future__ import annotations

import collections
import os
import selectors
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from mailgate.config import model
from mailgate.master import children, environment, files, generation, signals, upgrade
from mailgate.master import listeners as listeners_mod
from mailgate.master.children import Backoff, FastStop, WorkerRecord
from mailgate.master.generation import Generation
from mailgate.master.log import ErrorLog, LogOpenError, os_error
from mailgate.master.metrics import events as metric_events
from mailgate.master.metrics.directory import mark_dead
from mailgate.master.metrics.supervisor import MetricsServer
from mailgate.master.pidfile import PidFile
from mailgate.worker.io.loop import drain
from mailgate.worker.process import (
    BOOT_ERROR,
    ConnectionHandler,
    Listening,
    Worker,
    WorkerBootError,
)

if TYPE_CHECKING:  # annotations only: cli builds the contexts after the libssl check
    from mailgate.worker.tls.context import Contexts

IDLE_WAIT = 1.0


class ReloadError(Exception):
    """The new configuration generation could not be built; the old one keeps running."""


# Builds the next generation (parse, validate, TLS contexts) or raises ReloadError.
Reloader = Callable[[], tuple[model.Config, "Contexts"]]


class Arbiter:
    """The master: owns the listeners, forks workers, keeps their number, relays signals.

    Binary upgrade state is this master's own, never guessed from ``getppid()`` alone:
    ``new_binary`` is the pid of the new master this one started on USR2 (0 when none), and
    ``old_master`` the pid of the master that started this one, while it still runs.
    """

    def __init__(
        self,
        current: Generation,
        log: ErrorLog,
        *,
        reload: Reloader,
        argv: list[str],
        daemonized: bool = False,
        pidfile: PidFile | None = None,
        old_master: int = 0,
        handler: ConnectionHandler | None = None,
        metrics: MetricsServer | None = None,
    ) -> None:
        self.current = current
        self.log = log
        self.reload = reload
        self.argv = argv
        self.daemonized = daemonized
        self.pidfile = pidfile
        self.old_master = old_master
        self.handler = handler
        self.metrics = metrics or MetricsServer(log)  # unconfigured: serves nothing
        self.new_binary = 0
        self.workers: dict[int, WorkerRecord] = {}
        self.exit_code = 0
        self.quitting = False  # graceful stop
        self.terminating = False  # fast stop
        self.noaccepting = False  # WINCH: workers stopped, master stays
        self._signals: collections.deque[int] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._wakeup_r = -1
        self._wakeup_w = -1
        self.backoff = Backoff()
        self._respawn_at = 0.0
        self._fast_stop = FastStop()

    @property
    def config(self) -> model.Config:
        return self.current.config

    @property
    def listeners(self) -> list[Listening]:
        return self.current.listeners

    @property
    def generation(self) -> int:
        return self.current.number

    @property
    def stopping(self) -> bool:
        return self.quitting or self.terminating

    @property
    def upgrading(self) -> bool:
        """A new binary started by this master still runs (USR2 was acted on)."""
        return self.new_binary != 0

    @property
    def old_master_running(self) -> bool:
        """This master is a new binary and the master that started it has not exited."""
        # The old master is our parent until it exits; then we are reparented.
        return self.old_master != 0 and os.getppid() == self.old_master

    def run(self) -> int:
        """Start the workers and supervise them until a stop completes; returns the exit code."""
        self._install_signals()
        self.metrics.start()
        self.log.notice("start worker processes")
        self.manage_workers()
        while not (self.stopping and not self.workers):
            self._wait(self._next_wait())
            self._dispatch_signals()
            self.reap_workers()
            self._press_fast_stop()
            self._notice_old_master_exit()
            self.manage_workers()
        self._close_listeners()
        self._selector.close()
        return self.exit_code

    # -- signals -------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signo in signals.HANDLED:
            signal.signal(signo, self._queue_signal)

    def _queue_signal(self, signo: int, frame: FrameType | None) -> None:
        # Runs between bytecodes: record only (gunicorn #3198: logging here deadlocked).
        self._signals.append(signo)

    def _wait(self, timeout: float) -> None:
        if self._selector.select(timeout):
            drain(self._wakeup_r)

    def _next_wait(self) -> float:
        now = time.monotonic()
        deadlines = [now + IDLE_WAIT]
        if self.terminating:
            deadlines.append(self._fast_stop.due)
        if self._respawn_at > now:
            deadlines.append(self._respawn_at)
        return max(0.0, min(deadlines) - now)

    def _dispatch_signals(self) -> None:
        while self._signals:
            signo = signal.Signals(self._signals.popleft())
            handler: Callable[[], None] = getattr(self, "handle_" + signo.name[3:].lower())
            handler()

    def handle_chld(self) -> None:
        """A child changed state; the reaping runs on every turn of the loop anyway."""
        self.log.notice(signals.received(signal.SIGCHLD))

    def handle_term(self) -> None:
        """Fast stop: TERM the workers now, then again with a doubling delay, then KILL."""
        self.log.notice(signals.received(signal.SIGTERM))
        self._begin_fast_stop()

    def handle_int(self) -> None:
        """Same as TERM (nginx)."""
        self.log.notice(signals.received(signal.SIGINT))
        self._begin_fast_stop()

    def handle_quit(self) -> None:
        """Graceful stop: QUIT the workers, close the listeners, exit when the workers are gone.

        A new binary started by this master is not signalled: it is the one taking over.
        """
        self.log.notice(signals.received(signal.SIGQUIT))
        if self.stopping:
            return
        self.quitting = True
        self._signal_workers(signal.SIGQUIT)
        # After telling the workers, as nginx does: no connection is refused in between.
        self._close_listeners()

    def handle_hup(self) -> None:
        """Reload: build the new generation, start its workers, then QUIT the old ones.

        While a new binary started by this master runs, HUP is the rollback step instead
        (nginx): the workers are started again with the running configuration, not re-read.
        """
        self.log.notice(signals.received(signal.SIGHUP))
        if self.stopping:
            return
        if self.upgrading:
            self.log.notice(
                f"new binary process {self.new_binary} is running: starting worker processes "
                "with the running configuration, not re-reading it"
            )
            self.noaccepting = False
            self.manage_workers(respect_backoff=False)
            return
        self.reconfigure()

    def reconfigure(self) -> None:
        """The reload transaction: prepare the next generation fully, or keep the current one.

        Parse, TLS contexts (``reload``), then listeners and everything else the workers
        inherit (``generation.prepare``). Any error is logged with its ``file:line`` and the
        running generation, its sockets and its workers stay exactly as they were. Then new
        workers start, and only then are the old ones told to QUIT, so every moment has
        workers accepting on every kept socket.
        """
        new_log: ErrorLog | None = None
        try:
            config, contexts = self.reload()
            # Reopened even when unchanged, as nginx opens a new cycle's files on HUP.
            new_log = self.log.successor(config.main.error_log)
            new = generation.prepare(config, contexts, self.log, previous=self.current)
        except (ReloadError, LogOpenError, generation.PrepareError) as err:
            if new_log is not None:
                new_log.close()
            self.log.emerg(str(err))
            self.log.alert("reload failed, the old configuration keeps running")
            metric_events.reload_done(False)
            return
        self.log.adopt(new_log)
        for warning in config.warnings:
            self.log.warn(warning)
        if (alert := self.metrics.reconfigure(config.main.metrics_listen)) is not None:
            self.log.alert(alert)
        metric_events.reload_done(True)
        generation.retire(self.current, new)
        self.current = new
        self._follow_pid_path(config.main.pid)
        self.noaccepting = False
        self.log.notice("start worker processes")
        self.manage_workers(respect_backoff=False)
        self._quit_old_generations()

    def handle_usr1(self) -> None:
        """Reopen the logs here and in every worker (log rotation).

        As nginx: the master, still root, reopens every log file first and hands it to the
        workers' user, so the workers can reopen files a rotation created root-owned.
        """
        self.log.notice(signals.received(signal.SIGUSR1))
        owner = files.worker_uid(self.config)
        self.log.reopen(owner)
        for error in self.current.server_logs.reopen(owner):
            self.log.alert(error)
        if owner is not None:
            for error in files.hand_over_access_logs(self.config, owner):
                self.log.alert(error)
        self._signal_workers(signal.SIGUSR1)

    def handle_usr2(self) -> None:
        """Binary upgrade: start the installed mailgate with our listeners (see ``upgrade``).

        Ignored, with the reason logged, while stopping, while a new binary started by this
        master still runs, and in a new binary whose old master still runs.
        """
        why = None
        if self.stopping:
            why = "the master is shutting down"
        elif self.upgrading:
            why = f"a new binary process {self.new_binary} is already running"
        elif self.old_master_running:
            why = f"this is a new binary and its old master process {self.old_master} still runs"
        if why is not None:
            self.log.notice(signals.received(signal.SIGUSR2, "ignoring"))
            self.log.notice(f"the changing binary signal is ignored: {why}")
            return
        self.log.notice(signals.received(signal.SIGUSR2))
        self.change_binary()

    def change_binary(self) -> None:
        """Move the pid file to ``.oldbin`` and start the new master; undo both on failure."""
        if self.pidfile is not None:
            try:
                self.pidfile.move_aside()
            except OSError as err:
                self.log.alert(
                    f'rename() "{self.pidfile.path}" to "{self.pidfile.oldbin}" failed '
                    f"({os_error(err)})"
                )
                return
        try:
            pid = upgrade.spawn_new_binary(self.argv, self.listeners, os.environ)
        except OSError as err:
            self.log.alert(f'execve() "{self.argv[0]}" failed ({os_error(err)})')
            self._take_pid_file_back()
            metric_events.upgrade_done(False)
            return
        self.new_binary = pid
        self.log.notice(f"start new binary process {pid}")

    def handle_winch(self) -> None:
        """Gracefully stop the workers and keep the master (a later HUP restarts them).

        nginx honours WINCH only when daemonized, because a terminal sends it to its
        foreground process group on every resize. mailgate also honours it while an upgrade
        is in progress (USR2 was acted on), so the upgrade works with ``daemon off``; a new
        binary runs in a session of its own, with no terminal, and always honours it.
        """
        if not (self.daemonized or self.upgrading or self.old_master):
            self.log.notice(signals.received(signal.SIGWINCH, "ignoring"))
            self.log.notice("WINCH is honoured when daemonized or during a binary upgrade")
            return
        self.log.notice(signals.received(signal.SIGWINCH))
        self.noaccepting = True
        self._quit_old_generations(everyone=True)

    # -- workers -------------------------------------------------------------------------

    def manage_workers(self, respect_backoff: bool = True) -> None:
        """Fork workers until the current generation has ``worker_processes`` of them."""
        if self.stopping or self.noaccepting:
            return
        if respect_backoff and time.monotonic() < self._respawn_at:
            return
        running = sum(
            1
            for record in self.workers.values()
            if record.generation == self.generation and not record.exiting
        )
        for _ in range(self.config.main.worker_processes - running):
            self.spawn_worker()

    def spawn_worker(self) -> int:
        """Fork one worker of the current generation; returns its pid."""
        worker = Worker(
            self.config,
            self.listeners,
            self.log,
            self.current.contexts,
            self.handler,
            server_logs=self.current.server_logs.by_index,
        )
        # Blocked across fork so a signal cannot reach the child while it still has our handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, signals.HANDLED)
        pid = os.fork()
        if pid == 0:
            self._become_worker(worker)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.HANDLED)
        self.workers[pid] = WorkerRecord(pid, self.generation, time.monotonic())
        self.log.notice(f"start worker process {pid}")
        return pid

    def _become_worker(self, worker: Worker) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            self._selector.close()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            env = environment.worker_environment(self.config.main.env, os.environ)
            os.environ.clear()
            os.environ.update(env)
            try:
                worker.init_process()
            except WorkerBootError as err:
                self.log.emerg(str(err))
                code = BOOT_ERROR
            else:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.HANDLED)
                code = worker.run()
                self.log.notice("exit")
        except Exception as err:
            self.log.alert(f"worker process failed: {err!r}")
        finally:
            os._exit(code)

    def reap_workers(self) -> None:
        """Collect every exited child, log how it ended, and plan respawns."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            mark_dead(pid)
            if self.metrics.reaped(pid, status):
                continue
            if pid == self.new_binary:
                self._new_binary_exited(pid, status)
                continue
            record = self.workers.pop(pid, None)
            self._log_exit(pid, status, "worker process" if record else "unknown process")
            if record is None or record.exiting or self.stopping:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == BOOT_ERROR:
                self.log.alert(
                    f"worker process {pid} exited with fatal code {BOOT_ERROR} "
                    "and cannot be respawned, exiting"
                )
                self.exit_code = 1
                self._begin_fast_stop()
                continue
            self._plan_respawn(record, status)

    def _new_binary_exited(self, pid: int, status: int) -> None:
        # The upgrade is over without us being replaced: take the pid file back and, if
        # WINCH stopped our workers, start them again (nginx's ngx_restart).
        self._log_exit(pid, status, "new binary process")
        self.new_binary = 0
        metric_events.upgrade_done(False)
        self._take_pid_file_back()
        if self.noaccepting and not self.stopping:
            self.noaccepting = False
            self.log.notice("start worker processes")

    def _log_exit(self, pid: int, status: int, name: str) -> None:
        alert, message = children.exit_line(name, pid, status)
        (self.log.alert if alert else self.log.notice)(message)

    def _plan_respawn(self, record: WorkerRecord, status: int) -> None:
        """Respawn at once, or after the back-off if the worker looks unable to boot."""
        metric_events.worker_restarted()
        now = time.monotonic()
        alert = self.backoff.after_exit(record, status, now)
        if alert is not None:
            self._respawn_at = now + self.backoff.delay
            self.log.alert(alert)

    def _signal_workers(self, signo: signal.Signals) -> None:
        for record in self.workers.values():
            if signo in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
                record.exiting = True
            self._kill(record.pid, signo)

    def _quit_old_generations(self, everyone: bool = False) -> None:
        for record in self.workers.values():
            if (everyone or record.generation != self.generation) and not record.exiting:
                record.exiting = True
                self._kill(record.pid, signal.SIGQUIT)

    def _kill(self, pid: int, signo: signal.Signals) -> None:
        try:
            os.kill(pid, signo)
        except ProcessLookupError:
            return  # exited already; the reaper will see it
        except OSError as err:
            self.log.alert(f"kill({pid}, {int(signo)}) failed ({err.errno}: {err.strerror})")

    # -- pid file, listeners, old master -------------------------------------------------

    def _take_pid_file_back(self) -> None:
        if self.pidfile is not None and (error := self.pidfile.take_back()) is not None:
            self.log.alert(error)

    def _follow_pid_path(self, path: str | None) -> None:
        if self.pidfile is not None and (error := self.pidfile.follow(path, os.getpid())):
            self.log.alert(error)

    def _close_listeners(self) -> None:
        # During an upgrade the other master still accepts on our unix sockets: keep the files.
        unlink = not (self.upgrading or self.old_master_running)
        listeners_mod.close_all(self.current.listeners, unlink=unlink)
        self.current.listeners = []

    def _notice_old_master_exit(self) -> None:
        if self.old_master and not self.old_master_running:
            self.log.notice(f"old master process {self.old_master} exited, upgrade complete")
            self.old_master = 0

    # -- fast stop -----------------------------------------------------------------------

    def _begin_fast_stop(self) -> None:
        if self.terminating:
            return
        self.terminating = True
        self._signal_workers(self._fast_stop.begin(time.monotonic()))

    def _press_fast_stop(self) -> None:
        if not self.terminating or not self.workers:
            return
        signo = self._fast_stop.press(time.monotonic())
        if signo is not None:
            self._signal_workers(signo)
