"""The arbiter's reaping decisions, on real short-lived children (no fork is mocked)."""

from __future__ import annotations

import os
import time

from mailgate.config import model
from mailgate.master.arbiter import Arbiter, ReloadError, WorkerRecord
from mailgate.master.log import ErrorLog
from mailgate.worker.process import BOOT_ERROR


def make_arbiter() -> Arbiter:
    config = model.Config(path="/x.conf", prefix="/", main=model.MainConfig(), servers=())
    log = ErrorLog()
    log.console = False

    def no_reload() -> tuple[model.Config, dict[int, object]]:
        raise ReloadError("not in this test")

    return Arbiter(config, [], log, contexts={}, reload=no_reload, argv=["mailgate"])


def exited_child(code: int, arbiter: Arbiter, age: float = 0.0) -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    arbiter.workers[pid] = WorkerRecord(pid, arbiter.generation, time.monotonic() - age)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    return pid


def test_quick_deaths_double_the_respawn_delay() -> None:
    arbiter = make_arbiter()
    delays = []
    for _ in range(3):
        exited_child(1, arbiter)
        arbiter.reap_workers()
        delays.append(arbiter.respawn_delay)
    assert delays == [0.1, 0.2, 0.4]
    assert arbiter.workers == {}


def test_a_worker_that_lived_resets_the_delay() -> None:
    arbiter = make_arbiter()
    exited_child(1, arbiter)
    arbiter.reap_workers()
    exited_child(0, arbiter, age=5.0)
    arbiter.reap_workers()
    assert arbiter.respawn_delay == 0.0


def test_boot_error_stops_the_master() -> None:
    arbiter = make_arbiter()
    exited_child(BOOT_ERROR, arbiter)
    arbiter.reap_workers()
    assert (arbiter.terminating, arbiter.exit_code) == (True, 1)
