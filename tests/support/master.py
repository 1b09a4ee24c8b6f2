"""The real master in a subprocess: ``python -m mailgate.master`` in a session of its own.

It runs in its own session (``start_new_session``), so teardown can kill it and every worker
with one ``killpg``, whatever a test left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import children, wait_until

MAILGATE = [sys.executable, "-m", "mailgate.master"]
START_TIMEOUT = 10.0


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

    def kill(self) -> None:
        """SIGKILL the master and every worker (they share the master's session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


def spawn_master(args: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    """``python -m mailgate.master ARGS`` in a session of its own, stderr into a file."""
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [*MAILGATE, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def master_ready(master: Master, workers: int) -> bool:
    """True once the pid file is written, ``workers`` workers run and the port accepts."""
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
