"""The metrics process as the master sees it: its socket, its pid, its restarts.

:class:`MetricsServer` binds ``metrics_listen`` in the master (so ``bind() failed`` is
reported like any listener's), starts the process, restarts it if it dies, keeps it across a
reload with the same address and replaces it when the address changes. The process is exec'd
fresh (``python -m mailgate.master.metrics --fd N``), so it holds no copy of the master's
state, listeners or TLS keys; it exits when the master goes away.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from typing import Protocol

from mailgate.config import model
from mailgate.master.metrics import MetricsError
from mailgate.master.metrics.directory import ENV, mark_dead
from mailgate.master.metrics.endpoint import CHILD_FD, bind

QUICK_DEATH = 1.0  # a metrics process dying sooner than this is not respawned
STOP_WAIT = 1.0  # seconds between TERM and KILL when stopping it
# Signals the master handles: the metrics process starts with their default actions.
_MASTER_SIGNALS = (
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGCHLD,
)


class Log(Protocol):
    """The error log as the master's metrics side uses it."""

    def alert(self, message: str) -> None: ...
    def notice(self, message: str) -> None: ...


def _same(a: model.MetricsListen | None, b: model.MetricsListen | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.family, a.host, a.port) == (b.family, b.host, b.port)


class MetricsServer:
    """The metrics process as the master sees it: its socket, its pid, its restarts."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.listen: model.MetricsListen | None = None
        self.sock: socket.socket | None = None
        self.pid = 0
        self.active = False  # start() was called: keep a process running
        self._spawned_at = 0.0

    def reconfigure(self, listen: model.MetricsListen | None) -> str | None:
        """A reload's ``metrics_listen``; returns the alert to log when it cannot apply.

        Turning metrics on needs a restart: every process already counts in memory, as
        prometheus_client chose at import without ``PROMETHEUS_MULTIPROC_DIR``."""
        try:
            if listen is not None and ENV not in os.environ:
                raise MetricsError("metrics_listen was off at start, a restart turns it on")
            self.configure(listen)
        except MetricsError as err:
            return f"{err}, the metrics endpoint is unchanged"
        return None

    def configure(self, listen: model.MetricsListen | None) -> None:
        """Take ``metrics_listen`` (at start and on every reload).

        The same address keeps the socket and the running process; another one is bound
        first (so a failure leaves everything as it was: raises ``MetricsError``), then the
        old process is stopped and, once started, a new one serves the new socket.
        """
        if _same(listen, self.listen) and (self.sock is not None or listen is None):
            return
        sock = bind(listen) if listen is not None else None
        self._stop_process()
        if self.sock is not None:
            self.sock.close()
        self.listen, self.sock = listen, sock
        if self.active:
            self._spawn()

    def start(self) -> None:
        """Start serving (in the master that will reap the process, after daemonizing)."""
        self.active = True
        if self.pid == 0:
            self._spawn()

    def reaped(self, pid: int, status: int) -> bool:
        """For the reap loop: True if ``pid`` was the metrics process (respawned if due)."""
        if pid == 0 or pid != self.pid:
            return False
        self.pid = 0
        how = (
            f"on signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"with code {os.WEXITSTATUS(status)}"
        )
        if time.monotonic() - self._spawned_at < QUICK_DEATH:
            self.log.alert(
                f"metrics process {pid} exited {how} at once, "
                "not respawning it until the next reload"
            )
            return True
        self.log.alert(f"metrics process {pid} exited {how}, respawning")
        self._spawn()
        return True

    def stop(self) -> None:
        """Stop the process and close the socket (master exit)."""
        self.active = False
        self._stop_process()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.listen = None

    def _spawn(self) -> None:
        if not self.active or self.sock is None or self.pid:
            return
        argv = [sys.executable, "-m", "mailgate.master.metrics", "--fd", str(CHILD_FD)]
        try:
            # dup2 onto CHILD_FD gives the child a copy without close-on-exec; the master's
            # own socket stays close-on-exec, so workers never inherit the metrics port.
            self.pid = os.posix_spawn(
                sys.executable,
                argv,
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, self.sock.fileno(), CHILD_FD)],
                setsigdef=_MASTER_SIGNALS,
                setsigmask=(),
            )
        except OSError as err:
            self.log.alert(f"posix_spawn() of the metrics process failed ({err})")
            return
        self._spawned_at = time.monotonic()
        assert self.listen is not None
        self.log.notice(f"start metrics process {self.pid} on {self.listen.text}")

    def _stop_process(self) -> None:
        pid, self.pid = self.pid, 0
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while True:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break  # reaped already
            if done:
                break
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        mark_dead(pid)
