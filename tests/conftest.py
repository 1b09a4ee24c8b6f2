"""Shared fixtures: a free loopback port, and the real master run in a subprocess.

The master runs as ``python -m mailgate.master`` in its own session (``start_new_session``), so
teardown can kill it and every worker with one ``killpg``, whatever a test left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MAILGATE = [sys.executable, "-m", "mailgate.master"]
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (zombies excluded), from ``/proc/*/stat``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def cmdline(pid: int) -> str:
    """The process title as ``ps`` shows it."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def config_text(
    *, port: int, pid: Path, log: Path, main: str = "", listen: str = "", workers: int = 2
) -> str:
    """A minimal foreground configuration with one plain IMAP server on ``port``."""
    return f"""\
daemon off;
worker_processes {workers};
error_log {log} info;
pid {pid};
{main}
events {{
    worker_connections 64;
}}
mail {{
    server {{
        listen 127.0.0.1:{port}{listen};
        protocol imap;
        proxy_pass 127.0.0.1:1;
    }}
}}
"""


@dataclass
class Master:
    """A running ``mailgate`` started by the ``mailgate`` fixture."""

    proc: subprocess.Popen[bytes]
    conf: Path
    pid_path: Path
    log_path: Path
    stderr_path: Path
    port: int

    @property
    def pid(self) -> int:
        return int(self.pid_path.read_text())

    def workers(self) -> list[int]:
        return children(self.pid)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def signal(self, signo: int) -> None:
        os.kill(self.pid, signo)

    def wait(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout)

    def wait_workers(self, count: int, timeout: float = 5.0) -> list[int]:
        assert wait_until(lambda: len(self.workers()) == count, timeout), self.log()
        return self.workers()


def _ready(master: Master, workers: int) -> bool:
    if master.proc.poll() is not None and not master.pid_path.exists():
        raise AssertionError(f"mailgate exited {master.proc.returncode}: {master.stderr()}")
    if not master.pid_path.exists() or not master.pid_path.read_text().strip():
        return False
    if len(master.workers()) < workers:
        return False
    try:
        socket.create_connection(("127.0.0.1", master.port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def mailgate(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    """Start the real master: ``mailgate(main=..., listen=..., workers=N, text=...)``.

    ``text`` replaces the whole configuration (use ``{port}``, ``{pid}``, ``{log}``);
    ``wait=False`` returns at once (for start-up failures and ``daemon on``);
    ``expect`` is the number of workers to wait for (default: ``workers``).
    """
    started: list[Master] = []

    def start(
        *,
        text: str | None = None,
        wait: bool = True,
        expect: int | None = None,
        args: tuple[str, ...] = (),
        **kwargs: object,
    ) -> Master:
        n = len(started)
        port = free_port()
        pid, log = tmp_path / f"mailgate{n}.pid", tmp_path / f"error{n}.log"
        conf, stderr = tmp_path / f"mailgate{n}.conf", tmp_path / f"stderr{n}.txt"
        if text is None:
            conf.write_text(config_text(port=port, pid=pid, log=log, **kwargs))  # type: ignore[arg-type]
        else:
            conf.write_text(text.format(port=port, pid=pid, log=log))
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [*MAILGATE, "-c", str(conf), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        master = Master(proc, conf, pid, log, stderr, port)
        started.append(master)
        if wait:
            workers = int(str(kwargs.get("workers", 2))) if expect is None else expect
            assert wait_until(lambda: _ready(master, workers), START_TIMEOUT), master.log()
        return master

    yield start
    for master in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.proc.pid, signal.SIGKILL)
        master.proc.wait(5)
