"""The real master in a subprocess, driven by signals, observed through /proc, ss and sockets."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.master import MAILGATE, Master
from tests.support.processes import children, cmdline, free_port, wait_until

pytestmark = pytest.mark.slow

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64


def listener_copy(pid: int, port: int) -> tuple[int, socket.socket]:
    """The fd number and a duplicate of the listener that process ``pid`` has for ``port``."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            assert fd >= 0, os.strerror(ctypes.get_errno())
            sock = socket.socket(fileno=fd)
            if sock.family == socket.AF_INET and sock.getsockname()[1] == port:
                return int(name), sock
            sock.close()
    finally:
        os.close(pidfd)
    raise AssertionError(f"no listener on port {port} in process {pid}")


def fd_flags(pid: int, fd: int) -> int:
    """The open-file flags of ``fd`` in ``pid`` (``flags:`` in fdinfo is octal)."""
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError("no flags in fdinfo")


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


IMAP_GREETING = b"* OK IMAP4 ready\r\n"


def connect_and_read(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(100)


def test_pid_file_names_the_master(mailgate: type[Master]) -> None:
    master = mailgate()
    assert master.pid_path.read_text() == f"{master.proc.pid}\n"


def test_master_runs_worker_processes_with_nginx_titles(mailgate: type[Master]) -> None:
    master = mailgate(workers=3)
    assert cmdline(master.pid).startswith("mailgate: master process ")
    assert [cmdline(pid) for pid in master.wait_workers(3)] == ["mailgate: worker process"] * 3


def test_worker_greets_an_accepted_connection(mailgate: type[Master]) -> None:
    master = mailgate()
    assert connect_and_read(master.port) == IMAP_GREETING


def test_listener_has_its_listen_parameters(mailgate: type[Master]) -> None:
    master = mailgate(listen=" backlog=17 rcvbuf=65536 sndbuf=65536 so_keepalive=30:10:4")
    ss = subprocess.run(
        ["ss", "-ltnH", f"sport = :{master.port}"], capture_output=True, text=True, check=True
    )
    assert ss.stdout.split()[2] == "17"  # Send-Q of a listening socket is its backlog
    fd, sock = listener_copy(master.pid, master.port)
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 65536  # kernel doubles
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 65536
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
    flags = fd_flags(master.pid, fd)
    assert flags & os.O_NONBLOCK
    assert not flags & os.O_CLOEXEC  # inheritable, for a later binary upgrade


def test_multipath_listener_accepts(mailgate: type[Master]) -> None:
    master = mailgate(listen=" multipath")
    _fd, sock = listener_copy(master.pid, master.port)
    with sock:
        supported = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == 262
    assert supported or "multipath is not supported on this platform" in master.log()
    assert connect_and_read(master.port) == IMAP_GREETING


def test_unix_listener_replaces_a_stale_socket_file(mailgate: type[Master], tmp_path: Path) -> None:
    path = tmp_path / "imap.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    master = mailgate(listen=f"; listen unix:{path}")
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(path))
        assert client.recv(100) == IMAP_GREETING
    master.signal(signal.SIGQUIT)
    assert master.wait() == 0
    assert not path.exists()


def test_killed_worker_is_replaced(mailgate: type[Master]) -> None:
    master = mailgate()
    victim, survivor = master.wait_workers(2)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: victim not in master.workers() and len(master.workers()) == 2)
    assert survivor in master.workers()
    assert f"worker process {victim} exited on signal 9" in master.log()


def test_quit_stops_gracefully_and_removes_the_pid_file(mailgate: type[Master]) -> None:
    master = mailgate()
    workers = master.workers()
    master.signal(signal.SIGQUIT)
    assert master.wait() == 0
    assert not master.pid_path.exists()
    log = master.log()
    assert "signal 3 (SIGQUIT) received, shutting down" in log
    for pid in workers:
        assert f"worker process {pid} exited with code 0" in log
    assert log.rstrip().endswith(f"{master.proc.pid}#0: exit")


def test_term_stops_fast(mailgate: type[Master]) -> None:
    master = mailgate()
    master.signal(signal.SIGTERM)
    assert master.wait(timeout=3) == 0
    assert "signal 15 (SIGTERM) received, exiting" in master.log()
    assert not master.pid_path.exists()


def test_hup_replaces_every_worker(mailgate: type[Master]) -> None:
    master = mailgate()
    old = set(master.workers())
    master.signal(signal.SIGHUP)
    assert wait_until(lambda: len(master.workers()) == 2 and not old & set(master.workers()))
    assert "signal 1 (SIGHUP) received, reconfiguring" in master.log()
    assert connect_and_read(master.port) == IMAP_GREETING


def test_hup_moves_the_error_log_to_the_new_file(mailgate: type[Master]) -> None:
    master = mailgate()
    moved = master.log_path.with_name("moved.log")
    master.conf.write_text(master.conf.read_text().replace(str(master.log_path), str(moved)))
    old = set(master.workers())
    master.signal(signal.SIGHUP)
    assert wait_until(lambda: len(master.workers()) == 2 and not old & set(master.workers()))
    assert wait_until(lambda: moved.exists() and "start worker process" in moved.read_text())
    connect_and_read(master.port)
    assert wait_until(lambda: "connected to" in moved.read_text())


def test_hup_with_a_broken_config_keeps_the_old_workers(mailgate: type[Master]) -> None:
    master = mailgate()
    old = master.workers()
    master.conf.write_text(master.conf.read_text() + "bogus_directive on;\n")
    master.signal(signal.SIGHUP)
    assert wait_until(lambda: "reload failed" in master.log())
    assert master.workers() == old
    assert "[emerg]" in master.log() and 'unknown directive "bogus_directive"' in master.log()


def test_usr1_reopens_the_error_log(mailgate: type[Master]) -> None:
    master = mailgate()
    rotated = master.log_path.with_suffix(".old")
    master.log_path.rename(rotated)
    master.signal(signal.SIGUSR1)
    assert wait_until(master.log_path.exists)
    assert "signal 10 (SIGUSR1) received, reopening logs" in rotated.read_text()


def test_bind_failure_is_reported_like_nginx(mailgate: type[Master]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        master = mailgate(text=_plain_config(port), wait=False)
        assert master.wait() == 1
    assert (
        f"mailgate: [emerg] bind() to 127.0.0.1:{port} failed (98: Address already in use)"
        in master.stderr()
    )
    assert not master.pid_path.exists()


def test_master_process_off_serves_from_the_master(mailgate: type[Master]) -> None:
    master = mailgate(main="master_process off;", workers=1, expect=0)
    assert children(master.pid) == []
    assert connect_and_read(master.port) == IMAP_GREETING
    master.signal(signal.SIGQUIT)
    assert master.wait() == 0


def test_daemon_on_detaches_from_the_launcher(tmp_path: Path) -> None:
    pid_path, port = tmp_path / "d.pid", free_port()
    conf = tmp_path / "d.conf"
    conf.write_text(
        _plain_config(port)
        .format(pid=pid_path, log=tmp_path / "d.log")
        .replace("daemon off;", "daemon on;")
    )
    launcher = subprocess.run([*MAILGATE, "-c", str(conf)], timeout=10, check=False)
    assert launcher.returncode == 0
    assert wait_until(lambda: pid_path.exists() and pid_path.read_text().strip() != "")
    daemon = int(pid_path.read_text())
    try:
        assert parent(daemon) != os.getpid()  # reparented to init or a subreaper
        assert os.getsid(daemon) != os.getsid(0)
        assert cmdline(daemon).startswith("mailgate: master process")
        os.kill(daemon, signal.SIGQUIT)
        # Generous: on a loaded machine a worker may still be importing when QUIT arrives.
        assert wait_until(lambda: not pid_path.exists(), 15)
    finally:
        if pid_path.exists():
            with contextlib.suppress(ProcessLookupError):  # it exited in the meantime
                os.killpg(os.getpgid(daemon), signal.SIGKILL)


def _plain_config(port: int) -> str:
    # Braces doubled: the fixture formats {pid} and {log} into it.
    return f"""\
daemon off;
worker_processes 1;
error_log {{log}} info;
pid {{pid}};
mail {{{{
    server {{{{
        listen 127.0.0.1:{port};
        protocol imap;
        proxy_pass 127.0.0.1:1;
    }}}}
}}}}
"""


def test_python_dash_m_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailgate.master", "-v"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stderr.startswith("mailgate version: mailgate/")
