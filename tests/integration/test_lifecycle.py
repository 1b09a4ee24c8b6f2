"""Reload, graceful worker exit, log reopening and the process limits, on the real master.

Clients are real (TLS handshakes, IMAP sessions logged in to Dovecot through the gateway);
``lifecycle_support.Traffic`` counts every connection that failed while the master was signalled.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.lifecycle_support import GREETING, Gate, ImapSession, greet, imap_round
from tests.support.clients import LineClient
from tests.support.master import MAILGATE, Master
from tests.support.pki import TlsFiles
from tests.support.processes import cmdline, free_port, wait_until

pytestmark = pytest.mark.slow


def backlog(port: int) -> int:
    ss = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    )
    return int(ss.stdout.split()[2])  # Send-Q of a listening socket is its backlog


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_reload_under_traffic_refuses_nothing_and_keeps_an_open_session(
    gate: Callable[..., Gate],
) -> None:
    g = gate()
    session = ImapSession(g.master.port).login()
    session.fetch()
    extra = free_port()
    with g.traffic() as traffic:
        # 1: a changed backlog on a kept socket, and a new listen address.
        g.rewrite(
            listen=" backlog=77",
            servers=f"    server {{ listen 127.0.0.1:{extra}; protocol imap; }}\n",
        )
        g.reloaded()
        assert wait_until(lambda: backlog(g.master.port) == 77)
        greet(extra)
        traffic.keep_going()
        session.fetch()
        # 2: the new address removed again: closed, while the kept ones never are.
        g.rewrite(listen=" backlog=77")
        g.reloaded()
        assert wait_until(lambda: refused(extra))
        traffic.keep_going()
        session.fetch()
    assert traffic.failures == []
    assert min(traffic.done.values()) > 5, traffic.done
    assert "the parameters of listen 127.0.0.1:" in g.master.log()
    session.logout()
    g.master.wait_workers(2)


def test_reload_with_a_config_error_keeps_the_running_generation(
    gate: Callable[..., Gate],
) -> None:
    g = gate()
    workers = g.master.workers()
    text = g.config()
    line = text.count("\n") + 1
    g.master.conf.write_text(text + "bogus_directive on;\n")
    with g.traffic() as traffic:
        g.master.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload failed" in g.master.log())
        traffic.keep_going()
    assert traffic.failures == []
    assert g.master.workers() == workers
    expected = (
        rf"\[emerg\] {g.master.pid}#0: unknown directive \"bogus_directive\" "
        rf"in {re.escape(str(g.master.conf))}:{line}\n"
    )
    assert re.search(expected, g.master.log()), g.master.log()
    assert f"[alert] {g.master.pid}#0: reload failed, the old configuration keeps running" in (
        g.master.log()
    )


def test_worker_shutdown_timeout_closes_a_session_left_open_after_a_reload(
    gate: Callable[..., Gate],
) -> None:
    g = gate(main="worker_shutdown_timeout 1s;")
    session = ImapSession(g.master.port).login()
    started = time.monotonic()
    g.reloaded()
    assert session.client.at_eof(timeout=5)
    assert time.monotonic() - started >= 0.9
    session.close()
    assert "worker_shutdown_timeout expired, closing 1 connection(s)" in g.master.log()
    g.master.wait_workers(2)


def test_without_shutdown_timeout_the_old_worker_waits_for_its_session(
    gate: Callable[..., Gate],
) -> None:
    g = gate()
    session = ImapSession(g.master.port).login()
    new = g.reloaded()
    time.sleep(1.5)
    (old,) = set(g.master.workers()) - new
    assert cmdline(old) == "mailgate: worker process is shutting down"
    session.fetch()
    session.logout()
    assert wait_until(lambda: old not in g.master.workers())


def test_usr1_after_moving_the_log_sends_new_lines_to_the_new_file(
    gate: Callable[..., Gate],
) -> None:
    # Workers reopen the log themselves, in pytest's folder that only root may enter; as root
    # the default user would be nobody (who could not), so they keep root here.
    g = gate(main="user root;" if os.geteuid() == 0 else "")
    rotated = g.master.log_path.with_name("rotated.log")
    g.master.log_path.rename(rotated)
    g.master.signal(signal.SIGUSR1)
    assert wait_until(lambda: rotated.read_text().count("reopening logs") == 3)  # master + 2
    g.reloaded()
    # Old workers log their graceful exit: they reopened too.
    assert wait_until(lambda: g.master.log().count("gracefully shutting down") == 2)
    assert "reconfiguring" in g.master.log()
    assert "reconfiguring" not in rotated.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can switch users")
def test_user_runs_workers_unprivileged_with_keys_read_by_the_master(
    gate: Callable[..., Gate], tmp_path: Path, tls_files: TlsFiles
) -> None:
    key = tmp_path / "root-only.key"
    key.write_bytes(tls_files.key.read_bytes())
    key.chmod(0o600)
    g = gate(main="user nobody nogroup;", tls=TlsFiles(tls_files.cert, key, tls_files.ca))
    # A worker is counted from its fork on, and drops privileges a moment later.
    assert wait_until(lambda: all(_dropped(pid) for pid in g.master.workers())), g.master.log()
    assert _ids(g.master.pid, "Uid") == [0] * 4
    greet(g.tls_port, g.tls())
    imap_round(g.master.port)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can switch users")
def test_a_worker_serves_its_first_connection_already_unprivileged(
    mailgate: Callable[..., Master],
) -> None:
    master = mailgate(main="user nobody nogroup;", workers=1, wait=False)
    assert wait_until(lambda: master.pid_path.exists() and master.pid_path.read_text().strip())
    with LineClient(master.port, timeout=10) as client:  # queued until the worker accepts
        assert client.line() == GREETING
        (worker,) = master.workers()
        assert _dropped(worker)  # at once, no waiting: it could not have served before


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can switch users")
def test_a_root_master_without_user_runs_workers_as_nobody(
    mailgate: Callable[..., Master],
) -> None:
    master = mailgate(workers=1)
    assert wait_until(lambda: all(_dropped(pid) for pid in master.workers())), master.log()
    assert _ids(master.pid, "Uid") == [0] * 4


def _dropped(pid: int) -> bool:
    """Every uid and gid of ``pid`` is nobody's (65534), as ``user nobody nogroup`` makes them."""
    return _ids(pid, "Uid") == _ids(pid, "Gid") == [65534] * 4


def _ids(pid: int, which: str) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(which + ":"):
            return [int(value) for value in line.split()[1:]]
    raise AssertionError(f"no {which} in /proc/{pid}/status")


def test_worker_rlimit_nofile_is_the_workers_limit(gate: Callable[..., Gate]) -> None:
    g = gate(main="worker_rlimit_nofile 4321;")
    for pid in g.master.workers():
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert re.search(r"Max open files\s+4321\s+4321\s", limits), limits


def test_connection_over_worker_connections_is_closed_and_logged(
    mailgate: Callable[..., Master],
) -> None:
    text = """\
daemon off;
worker_processes 1;
error_log {log} info;
pid {pid};
events {{ worker_connections 3; }}
mail {{ server {{ listen 127.0.0.1:{port}; protocol imap; proxy_pass 127.0.0.1:1; }} }}
"""
    master = mailgate(text=text, workers=1)
    time.sleep(0.5)  # the fixture's readiness probe has been let go of by the worker
    clients = [LineClient(master.port) for _ in range(3)]
    for client in clients:
        assert client.line() == GREETING
    with LineClient(master.port) as over:
        assert over.line() == b""  # closed at once, no half-spoken greeting
    assert wait_until(lambda: "3 worker_connections are not enough" in master.log())
    for client in clients:
        assert client.ask(b"a NOOP") == b"a OK completed\r\n"
    clients.pop().close()
    assert wait_until(lambda: _greets(master.port))
    for client in clients:
        client.close()


def _greets(port: int) -> bool:
    with LineClient(port) as client:
        return client.line() == GREETING


def test_daemon_launcher_exits_once_the_pid_file_names_the_master(tmp_path: Path) -> None:
    pid_path, port = tmp_path / "d.pid", free_port()
    conf = tmp_path / "d.conf"
    conf.write_text(
        f"""\
daemon on;
worker_processes 1;
error_log {tmp_path / "d.log"} info;
pid {pid_path};
mail {{ server {{ listen 127.0.0.1:{port}; protocol imap; proxy_pass 127.0.0.1:1; }} }}
"""
    )
    launcher = subprocess.run([*MAILGATE, "-c", str(conf)], timeout=10, check=False)
    daemon = int(pid_path.read_text())  # no wait: it exists when the launcher returns
    try:
        assert launcher.returncode == 0
        assert cmdline(daemon).startswith("mailgate: master process")
        assert _greets(port)
        os.kill(daemon, signal.SIGQUIT)
        assert wait_until(lambda: not pid_path.exists())
    finally:
        if pid_path.exists():
            os.killpg(os.getpgid(daemon), signal.SIGKILL)
