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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType

from mailgate.config import model
from mailgate.master import listeners as listeners_mod
from mailgate.master import signals
from mailgate.master.log import ErrorLog
from mailgate.worker.process import (
    BOOT_ERROR,
    Handler,
    Listening,
    Worker,
    WorkerBootError,
)

FAST_STOP_FIRST_DELAY = 0.05  # nginx re-sends TERM after 50 ms, doubling ...
FAST_STOP_KILL_AFTER = 1.0  # ... and sends SIGKILL once the delay passes 1 s
QUICK_DEATH = 1.0  # a worker dying sooner than this after start is respawned with back-off
RESPAWN_FIRST_DELAY = 0.1
RESPAWN_MAX_DELAY = 10.0
IDLE_WAIT = 1.0


class ReloadError(Exception):
    """The new configuration generation could not be built; the old one keeps running."""


# Builds the next generation (parse, validate, TLS contexts) or raises ReloadError.
Reloader = Callable[[], tuple[model.Config, Mapping[int, object]]]


@dataclass(slots=True)
class WorkerRecord:
    """What the master knows about one child."""

    pid: int
    generation: int
    started: float
    exiting: bool = False  # told to QUIT (reload, WINCH, shutdown): not respawned


class Arbiter:
    """The master: owns the listeners, forks workers, keeps their number, relays signals."""

    def __init__(
        self,
        config: model.Config,
        listeners: list[Listening],
        log: ErrorLog,
        *,
        contexts: Mapping[int, object],
        reload: Reloader,
        argv: list[str],
        daemonized: bool = False,
        handler: Handler | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.log = log
        self.contexts = contexts
        self.reload = reload
        self.argv = argv
        self.daemonized = daemonized
        self.handler = handler
        self.workers: dict[int, WorkerRecord] = {}
        self.generation = 0
        self.exit_code = 0
        self.quitting = False  # graceful stop
        self.terminating = False  # fast stop
        self.noaccepting = False  # WINCH: workers stopped, master stays
        self._signals: collections.deque[int] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._wakeup_r = -1
        self._wakeup_w = -1
        self.respawn_delay = 0.0
        self._respawn_at = 0.0
        self._kill_delay = FAST_STOP_FIRST_DELAY
        self._kill_at = 0.0

    @property
    def stopping(self) -> bool:
        return self.quitting or self.terminating

    def run(self) -> int:
        """Start the workers and supervise them until a stop completes; returns the exit code."""
        self._install_signals()
        self.log.notice("start worker processes")
        self.manage_workers()
        while not (self.stopping and not self.workers):
            self._wait(self._next_wait())
            self._dispatch_signals()
            self.reap_workers()
            self._press_fast_stop()
            self.manage_workers()
        listeners_mod.close_all(self.listeners)
        self.listeners = []
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
            try:
                while os.read(self._wakeup_r, 512):
                    pass
            except BlockingIOError:
                return

    def _next_wait(self) -> float:
        now = time.monotonic()
        deadlines = [now + IDLE_WAIT]
        if self.terminating:
            deadlines.append(self._kill_at)
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
        """Graceful stop: QUIT the workers, close the listeners, exit when the workers are gone."""
        self.log.notice(signals.received(signal.SIGQUIT))
        if self.stopping:
            return
        self.quitting = True
        self._signal_workers(signal.SIGQUIT)
        # After telling the workers, as nginx does: no connection is refused in between.
        listeners_mod.close_all(self.listeners)
        self.listeners = []

    def handle_hup(self) -> None:
        """Reload: build the new generation, start its workers, then QUIT the old ones.

        Any error keeps the old generation running. Listening sockets are matched by address
        and reused; the parameters of a reused socket are not re-applied yet (a later issue
        brings nginx's full listener diffing), nor does a changed ``pid`` path move the file.
        """
        self.log.notice(signals.received(signal.SIGHUP))
        if self.stopping:
            return
        try:
            config, contexts = self.reload()
            new_listeners = listeners_mod.reuse_or_open(config, self.listeners, self.log)
        except (ReloadError, listeners_mod.BindError) as err:
            self.log.emerg(str(err))
            self.log.alert("reload failed, the old configuration keeps running")
            return
        for warning in config.warnings:
            self.log.warn(warning)
        kept = {listening.sock for listening in new_listeners}
        listeners_mod.close_all(
            [listening for listening in self.listeners if listening.sock not in kept]
        )
        self.config, self.contexts, self.listeners = config, contexts, new_listeners
        self.generation += 1
        self.noaccepting = False
        self.log.notice("start worker processes")
        self.manage_workers(respect_backoff=False)
        self._quit_old_generations()

    def handle_usr1(self) -> None:
        """Reopen the error log here and in every worker (log rotation)."""
        self.log.notice(signals.received(signal.SIGUSR1))
        self.log.reopen()
        self._signal_workers(signal.SIGUSR1)

    def handle_usr2(self) -> None:
        """Binary upgrade: not implemented yet; the master says so and carries on."""
        self.log.notice(signals.received(signal.SIGUSR2, "ignoring"))
        self.log.notice("binary upgrade is not supported yet")

    def handle_winch(self) -> None:
        """Daemonized only: gracefully stop the workers and keep the master (HUP restarts)."""
        if not self.daemonized:
            self.log.notice(signals.received(signal.SIGWINCH, ""))
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
        worker = Worker(self.config, self.listeners, self.log, self.contexts, self.handler)
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
            self._plan_respawn(record)

    def _log_exit(self, pid: int, status: int, name: str) -> None:
        if os.WIFSIGNALED(status):
            core = " (core dumped)" if os.WCOREDUMP(status) else ""
            self.log.alert(f"{name} {pid} exited on signal {os.WTERMSIG(status)}{core}")
        else:
            self.log.notice(f"{name} {pid} exited with code {os.WEXITSTATUS(status)}")

    def _plan_respawn(self, record: WorkerRecord) -> None:
        now = time.monotonic()
        if now - record.started >= QUICK_DEATH:
            self.respawn_delay = 0.0
            return
        # A worker that dies at once will die again: back off instead of fork-looping.
        self.respawn_delay = min(
            max(self.respawn_delay * 2, RESPAWN_FIRST_DELAY), RESPAWN_MAX_DELAY
        )
        self._respawn_at = now + self.respawn_delay
        self.log.alert(
            f"worker process {record.pid} exited within {QUICK_DEATH:g}s of its start, "
            f"respawning in {self.respawn_delay:g}s"
        )

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

    # -- fast stop -----------------------------------------------------------------------

    def _begin_fast_stop(self) -> None:
        if self.terminating:
            return
        self.terminating = True
        self._kill_delay = FAST_STOP_FIRST_DELAY
        self._kill_at = time.monotonic() + self._kill_delay
        self._signal_workers(signal.SIGTERM)

    def _press_fast_stop(self) -> None:
        if not self.terminating or not self.workers or time.monotonic() < self._kill_at:
            return
        self._kill_delay *= 2
        self._kill_at = time.monotonic() + self._kill_delay
        if self._kill_delay > FAST_STOP_KILL_AFTER:
            self._signal_workers(signal.SIGKILL)
        else:
            self._signal_workers(signal.SIGTERM)
