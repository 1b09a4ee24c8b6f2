"""Process bookkeeping from /proc: who the workers are, their RSS and CPU, and cleanup.

Every long-lived process the harness starts is registered here, so one ``kill_all()`` in a
``finally`` (and in ``atexit``) removes them even when a measurement raises or the user presses
Ctrl-C half-way through.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import children

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_started: list[subprocess.Popen[bytes]] = []


def register(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Remember ``proc`` (started with ``start_new_session``) for ``kill_all``."""
    _started.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """TERM the process, then KILL its whole session: servers leave no worker behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc in _started:
        _started.remove(proc)


def kill_all() -> None:
    """Stop every registered process, newest first (servers after their clients)."""
    for proc in reversed(list(_started)):
        stop(proc, timeout=3.0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not of its reaped children), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (the second number of ``statm``)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except OSError:
        return 0


@dataclass(frozen=True)
class ServerProcs:
    """A server's master and workers, for CPU and memory accounting."""

    master: int

    def workers(self) -> list[int]:
        return children(self.master)

    def cpu(self) -> float:
        """Master plus workers, in seconds: the whole server's CPU, as the brief defines it."""
        return cpu_seconds(self.master) + sum(cpu_seconds(pid) for pid in self.workers())

    def worker_rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.workers())
