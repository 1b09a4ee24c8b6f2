"""The arbiter's reaping decisions, on real short-lived children (no fork is mocked)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from mailgate.config import model
from mailgate.master.arbiter import Arbiter, ReloadError
from mailgate.master.children import WorkerRecord
from mailgate.master.generation import Generation
from mailgate.master.log import ErrorLog, Level
from mailgate.master.pidfile import PidFile
from mailgate.worker.process import BOOT_ERROR


def make_arbiter() -> Arbiter:
    config = model.Config(path="/x.conf", prefix="/", main=model.MainConfig(), servers=())
    log = ErrorLog()
    log.console = False

    def no_reload() -> tuple[model.Config, dict[int, object]]:
        raise ReloadError("not in this test")

    return Arbiter(Generation(0, config, {}, []), log, reload=no_reload, argv=["mailgate"])


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
        delays.append(arbiter.backoff.delay)
    assert delays == [0.1, 0.2, 0.4]
    assert arbiter.workers == {}


def test_a_worker_that_lived_resets_the_delay() -> None:
    arbiter = make_arbiter()
    exited_child(1, arbiter)
    arbiter.reap_workers()
    exited_child(0, arbiter, age=5.0)
    arbiter.reap_workers()
    assert arbiter.backoff.delay == 0.0


def test_a_young_worker_killed_by_a_signal_is_respawned_without_back_off() -> None:
    arbiter = make_arbiter()
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        arbiter.workers[pid] = WorkerRecord(pid, arbiter.generation, time.monotonic())
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        arbiter.reap_workers()
    assert (arbiter.backoff.delay, arbiter._respawn_at) == (0.0, 0.0)


def test_boot_error_stops_the_master() -> None:
    arbiter = make_arbiter()
    exited_child(BOOT_ERROR, arbiter)
    arbiter.reap_workers()
    assert (arbiter.terminating, arbiter.exit_code) == (True, 1)


def test_usr2_is_ignored_while_a_new_binary_runs(tmp_path: Path) -> None:
    arbiter = make_arbiter()
    arbiter.log = ErrorLog([(str(tmp_path / "e.log"), Level.NOTICE)])
    arbiter.new_binary = 4242
    arbiter.handle_usr2()
    text = (tmp_path / "e.log").read_text()
    assert "signal 12 (SIGUSR2) received, ignoring" in text
    assert "a new binary process 4242 is already running" in text


def test_winch_is_ignored_in_the_foreground_unless_an_upgrade_runs() -> None:
    arbiter = make_arbiter()
    arbiter.handle_winch()
    assert not arbiter.noaccepting
    arbiter.new_binary = 4242
    arbiter.handle_winch()
    assert arbiter.noaccepting


def test_exit_of_the_new_binary_gives_back_the_pid_file_and_the_workers(tmp_path: Path) -> None:
    arbiter = make_arbiter()
    path = tmp_path / "m.pid"
    arbiter.pidfile = PidFile(str(path))
    arbiter.pidfile.write(os.getpid())
    arbiter.pidfile.move_aside()
    arbiter.noaccepting = True  # WINCH stopped our workers
    pid = os.fork()
    if pid == 0:
        os._exit(1)
    arbiter.new_binary = pid
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    arbiter.reap_workers()
    assert (arbiter.new_binary, arbiter.noaccepting) == (0, False)
    assert path.read_text() == f"{os.getpid()}\n"
