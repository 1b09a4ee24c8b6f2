"""contrib/: the LSB init script, the systemd unit and the logrotate snippet, checked and run.

The init script runs for real against a daemonized mailgate whose paths point into the test's
folder (``DAEMON``, ``CONF`` and ``PIDFILE`` come from the environment).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lifecycle_support import GREETING, alive, kill_group
from tests.support.processes import children, free_port, wait_until

pytestmark = pytest.mark.slow

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
INIT = CONTRIB / "mailgate.init"
UNIT = CONTRIB / "mailgate.service"
LOGROTATE = CONTRIB / "mailgate.logrotate"
INSTALLED = "/usr/local/bin/mailgate"  # the path the contrib files name
MAILGATE_SCRIPT = Path(sys.executable).with_name("mailgate")


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_init_script_parses(shell: str) -> None:
    result = subprocess.run([shell, "-n", str(INIT)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart= programs exist, so it reads a copy naming our mailgate.
    unit = tmp_path / "mailgate.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(MAILGATE_SCRIPT)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # Unknown keys or bad values are only warnings (exit 0): any output is a failure.
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


class Init:
    """``contrib/mailgate.init`` with its paths pointed at a test folder."""

    def __init__(self, folder: Path) -> None:
        self.pid_path = folder / "mailgate.pid"
        self.log_path = folder / "error.log"
        self.conf = folder / "mailgate.conf"
        self.log_dir = folder / "logs"
        self.port = free_port()
        self.conf.write_text(
            f"""\
worker_processes 2;
error_log {self.log_path} info;
pid {self.pid_path};
mail {{
    server {{ listen 127.0.0.1:{self.port}; protocol imap; proxy_pass 127.0.0.1:1; }}
}}
"""
        )
        self.env = {
            **os.environ,
            "DAEMON": str(MAILGATE_SCRIPT),
            "CONF": str(self.conf),
            "PIDFILE": str(self.pid_path),
            "LOGDIR": str(folder / "logs"),
            "UPGRADE_TIMEOUT": "15",
        }
        self.seen: set[int] = set()

    def __call__(self, action: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["sh", str(INIT), action],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if self.pid_path.exists() and self.pid_path.read_text().strip().isdigit():
            self.seen.add(int(self.pid_path.read_text()))
        return result

    @property
    def pid(self) -> int:
        return int(self.pid_path.read_text())

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def init(tmp_path: Path) -> Iterator[Init]:
    script = Init(tmp_path)
    yield script
    for pid in script.seen:  # every master the test saw, whatever state it was left in
        with contextlib.suppress(ProcessLookupError):
            kill_group(os.getpgid(pid))


def _greets(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(100) == GREETING


def test_init_script_starts_reloads_upgrades_and_stops_a_daemon(init: Init) -> None:
    assert init("configtest").returncode == 0
    started = init("start")
    assert started.returncode == 0, started.stdout + started.stderr + init.log()
    first = init.pid  # written before the launcher returned
    assert os.getsid(first) != os.getsid(0)  # detached
    assert wait_until(lambda: len(children(first)) == 2)
    status = init("status")
    assert (status.returncode, status.stdout) == (0, f"mailgate: running (pid {first})\n")
    assert _greets(init.port)

    workers = children(first)
    assert init("reload").returncode == 0
    assert wait_until(lambda: len(set(children(first)) - set(workers)) == 2)

    upgraded = init("upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr + init.log()
    second = init.pid
    assert second != first
    assert wait_until(lambda: not alive(first), 10)
    assert wait_until(lambda: len(children(second)) == 2)
    assert wait_until(lambda: f"old master process {first} exited" in init.log())
    assert _greets(init.port)

    stopped = init("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not alive(second)
    assert init("status").returncode == 3


def test_init_script_creates_the_default_log_folder(init: Init) -> None:
    assert init("configtest").returncode == 0
    assert init.log_dir.is_dir()
    assert init.log_dir.stat().st_mode & 0o777 == 0o755


def test_init_script_reload_refuses_a_broken_configuration(init: Init) -> None:
    assert init("start").returncode == 0
    init.conf.write_text(init.conf.read_text() + "bogus_directive on;\n")
    reload = init("reload")
    assert reload.returncode == 1
    assert 'unknown directive "bogus_directive"' in reload.stderr
    assert "reconfiguring" not in init.log()
    init.conf.write_text(init.conf.read_text().replace("bogus_directive on;\n", ""))
    assert init("stop").returncode == 0


def test_logrotate_postrotate_makes_mailgate_write_a_new_file(init: Init) -> None:
    text = LOGROTATE.read_text()
    match = re.search(r"postrotate\n(.*?)\n\s*endscript", text, re.S)
    assert match is not None
    command = (
        match.group(1)
        .strip()
        .replace("/run/mailgate.pid", str(init.pid_path))
        .replace(INSTALLED, str(MAILGATE_SCRIPT))
        .replace("/etc/mailgate/mailgate.conf", str(init.conf))
    )
    assert init("start").returncode == 0
    rotated = init.log_path.with_name("error.log.1")
    init.log_path.rename(rotated)
    subprocess.run(["sh", "-c", command], check=True, timeout=30)
    assert wait_until(init.log_path.exists)
    os.kill(init.pid, signal.SIGHUP)
    assert wait_until(lambda: "reconfiguring" in init.log())
    assert "reopening logs" in rotated.read_text()
    assert init("stop").returncode == 0


def test_logrotate_snippet_parses(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = subprocess.run(
        ["logrotate", "-d", "-s", str(state), str(LOGROTATE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
