"""What the master decides about its children: when to start one again, how to log its end,
and how hard to press a fast stop.

A worker killed by a signal (an OOM kill, an admin's ``kill -9``, a crash) is replaced at once,
however young, as nginx does: backing off would leave the listeners with no worker while
clients wait in the backlog. Only a worker that exited by itself right after its fork failed in
its own start-up and would fail again: that one is delayed, doubling, so the master does not
fork in a loop.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

QUICK_DEATH = 1.0  # an exit by itself sooner than this after the fork is a failed boot
FIRST_DELAY = 0.1
MAX_DELAY = 10.0
FAST_STOP_FIRST_DELAY = 0.05  # nginx re-sends TERM after 50 ms, doubling ...
FAST_STOP_KILL_AFTER = 1.0  # ... and sends SIGKILL once the delay passes 1 s


@dataclass(slots=True)
class WorkerRecord:
    """What the master knows about one child."""

    pid: int
    generation: int
    started: float
    exiting: bool = False  # told to QUIT (reload, WINCH, shutdown): not respawned


@dataclass(slots=True)
class Backoff:
    """The respawn delay after the deaths seen so far (0: respawn at once)."""

    delay: float = 0.0

    def after_exit(self, record: WorkerRecord, status: int, now: float) -> str | None:
        """Take one worker's death into account; the alert to log when its respawn waits."""
        if os.WIFSIGNALED(status):
            return None
        if now - record.started >= QUICK_DEATH:
            self.delay = 0.0
            return None
        self.delay = min(max(self.delay * 2, FIRST_DELAY), MAX_DELAY)
        return (
            f"worker process {record.pid} exited with code {os.WEXITSTATUS(status)} within "
            f"{QUICK_DEATH:g}s of its start, respawning in {self.delay:g}s"
        )


def exit_line(name: str, pid: int, status: int) -> tuple[bool, str]:
    """How a child ended, as nginx logs it: ``(alert, message)``; a signal is an alert."""
    if os.WIFSIGNALED(status):
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return True, f"{name} {pid} exited on signal {os.WTERMSIG(status)}{core}"
    return False, f"{name} {pid} exited with code {os.WEXITSTATUS(status)}"


@dataclass(slots=True)
class FastStop:
    """nginx's fast stop: TERM to every worker, again after 50 ms, doubling, and KILL once
    the delay passes a second."""

    delay: float = FAST_STOP_FIRST_DELAY
    due: float = 0.0  # when to press again

    def begin(self, now: float) -> signal.Signals:
        self.delay = FAST_STOP_FIRST_DELAY
        self.due = now + self.delay
        return signal.SIGTERM

    def press(self, now: float) -> signal.Signals | None:
        """The signal to send again now, or None before it is due."""
        if now < self.due:
            return None
        self.delay *= 2
        self.due = now + self.delay
        return signal.SIGKILL if self.delay > FAST_STOP_KILL_AFTER else signal.SIGTERM
