"""Operations an admin runs on a live mailgate, with its workers unprivileged.

Log rotation: logrotate renames the logs and creates new ones ``0640 root adm``, then USR1.
The workers run as ``nobody`` and cannot open such a file; as nginx, the master (root) reopens
every log first and hands it to the workers' user, so every line after USR1 lands in the new
files.
"""

from __future__ import annotations

import grp
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Master, wait_until
from tests.servers.files import reachable_dir

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
