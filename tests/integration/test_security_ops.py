"""Operations an admin runs on a live mailgate, with its workers unprivileged.

Log rotation: logrotate renames the logs and creates new ones ``0640 root adm``, then USR1.
The workers run as ``nobody`` and cannot open such a file; as nginx, the master (root) reopens
every log first and hands it to the workers' user, so every line after USR1 lands in the new
files.

The metrics folder: made only when ``metrics_listen`` is on, with ``mkdtemp`` (a name another
local user cannot take first), 0700, and removed at a cold stop. The metrics process serves
every scraper from one thread: connections cannot make it start threads.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import signal
import socket
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailgate.master.metrics import directory as metrics_directory
from tests.servers.files import reachable_dir
from tests.support.master import Master
from tests.support.processes import cmdline, free_port, wait_until

pytestmark = pytest.mark.slow

GREETING = b"* OK IMAP4 ready\r\n"


def logout(port: int) -> None:
    """One IMAP session that ends at once: an access log line, and error log lines."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert sock.recv(100) == GREETING
        sock.sendall(b"a LOGOUT\r\n")
        while sock.recv(100):
            pass


def rotate(path: Path) -> Path:
    """What logrotate's ``create 0640 root adm`` does: rename, then a new root-owned file."""
    rotated = path.with_name(path.name + ".1")
    path.rename(rotated)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.fchown(fd, 0, grp.getgrnam("adm").gr_gid)
    os.fchmod(fd, 0o640)  # whatever the umask
    os.close(fd)
    return rotated


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can switch users")
def test_usr1_after_rotation_puts_worker_lines_in_the_new_root_owned_files(
    mailgate: Callable[..., Master], tmp_path: Path
) -> None:
    with reachable_dir(tmp_path, "logs") as logs:
        error_log, access_log = logs / "error.log", logs / "access.log"
        master = mailgate(
            text=f"""\
daemon off;
user nobody nogroup;
worker_processes 1;
error_log {error_log} info;
pid {{pid}};
events {{{{ worker_connections 16; }}}}
mail {{{{
    server {{{{
        listen 127.0.0.1:{{port}};
        protocol imap;
        proxy_pass 127.0.0.1:1;
        access_log {access_log};
    }}}}
}}}}
""",
            workers=1,
        )
        (worker,) = master.workers()
        logout(master.port)
        assert wait_until(lambda: access_log.stat().st_size > 0)
        old_error, old_access = rotate(error_log), rotate(access_log)
        master.signal(signal.SIGUSR1)
        reopening = f"{worker}#0: signal 10 (SIGUSR1) received, reopening logs"
        assert wait_until(lambda: reopening in old_error.read_text())
        logout(master.port)
        assert wait_until(lambda: f"{worker}#0: " in error_log.read_text()), old_error.read_text()
        assert wait_until(lambda: access_log.stat().st_size > 0), old_error.read_text()
        assert "failed (13: Permission denied)" not in old_error.read_text()
        assert "reason=quit" in old_access.read_text()  # the session before the rotation
        assert len(access_log.read_text().splitlines()) == 1  # and only the one after it here
        for path in (error_log, access_log):
            info = path.stat()  # nginx's hand-over: the workers' user, the group kept
            assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (
                65534,
                grp.getgrnam("adm").gr_gid,
                0o640,
            )


# -- the metrics folder and the metrics process ---------------------------------------------------


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A world-writable sticky folder like /tmp, the masters' TMPDIR in this test."""
    folder = Path(tempfile.mkdtemp(prefix="mailgate-shared-tmp-"))
    folder.chmod(0o1777)
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.delenv(metrics_directory.ENV, raising=False)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def squat_as_nobody(folder: Path, conf: Path) -> Path:
    """Another local user creates, first, the folder an older mailgate derived from its
    configuration path (``mailgate-metrics-<uid>-<digest>``), as a real attacker would."""
    digest = hashlib.sha256(f"{conf.parent}\0{conf}".encode()).hexdigest()[:16]
    path = folder / f"mailgate-metrics-{os.geteuid()}-{digest}"
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            path.mkdir(mode=0o777)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert path.stat().st_uid == 65534
    return path


def metrics_process(master: Master) -> int:
    def found() -> list[int]:
        return [pid for pid in master.workers() if "metrics process" in cmdline(pid)]

    assert wait_until(lambda: len(found()) == 1), master.log()  # titled once it runs
    return found()[0]


def scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        status: int = reply.status
        return status


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads in /proc/{pid}/status")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another user to squat the folder")
@pytest.mark.parametrize("metrics", ["off", "on"])
def test_a_squatted_metrics_folder_does_not_stop_the_start(
    mailgate: Callable[..., Master], shared_tmp: Path, tmp_path: Path, metrics: str
) -> None:
    squatted = squat_as_nobody(shared_tmp, tmp_path / "mailgate0.conf")
    port = free_port()
    line = f"metrics_listen 127.0.0.1:{port};" if metrics == "on" else ""
    master = mailgate(main=line, workers=1)
    if metrics == "off":
        assert os.listdir(shared_tmp) == [squatted.name]  # nothing made with metrics off
        return
    assert wait_until(lambda: scrape(port) == 200)
    (made,) = set(os.listdir(shared_tmp)) - {squatted.name}
    info = (shared_tmp / made).stat()
    # The workers write there: a root master without ``user`` runs them as nobody.
    assert (info.st_uid, info.st_mode & 0o777) == (pwd.getpwnam("nobody").pw_uid, 0o700)
    assert os.listdir(squatted) == []  # nothing written where another user could read it
    master.signal(signal.SIGQUIT)
    assert master.wait() == 0
    assert os.listdir(shared_tmp) == [squatted.name]  # removed at the cold stop


def test_idle_connections_and_scrapes_start_no_threads_in_the_metrics_process(
    mailgate: Callable[..., Master], shared_tmp: Path
) -> None:
    port = free_port()
    master = mailgate(main=f"metrics_listen 127.0.0.1:{port};", workers=1)
    assert wait_until(lambda: scrape(port) == 200)
    pid = metrics_process(master)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
    try:
        for _ in range(10):
            assert scrape(port) == 200  # served while ten scrapers say nothing
        assert threads(pid) == 1
    finally:
        for sock in idle:
            sock.close()
