"""Binary upgrade (USR2, WINCH, QUIT) and its rollback, on the real master under traffic.

The masters run with ``daemon off`` under the test process, as under a shell or a supervisor:
the case where nginx 1.22 ignores USR2. The new master runs in a session of its own, so the
``mailgate`` fixture's killpg does not reach it: ``reaping`` kills it at the end.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.lifecycle_support import Gate, ImapSession, alive, greet, reaping
from tests.support.master import Master
from tests.support.processes import children, cmdline, wait_until

pytestmark = pytest.mark.slow


def oldbin(master: Master) -> Path:
    return master.pid_path.with_name(master.pid_path.name + ".oldbin")


def upgraded(master: Master, old: int) -> int:
    """USR2 to ``old``; waits for the new master and its workers, returns its pid."""
    os.kill(old, signal.SIGUSR2)
    assert wait_until(lambda: _pid_in(master.pid_path) not in (None, old), 10), master.log()
    new = _pid_in(master.pid_path)
    assert new is not None
    assert wait_until(lambda: len(children(new)) == 2, 10), master.log()
    return new


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def test_upgrade_under_traffic_drops_nothing_and_keeps_an_open_session(
    gate: Callable[..., Gate],
) -> None:
    g = gate()
    master, old = g.master, g.master.proc.pid
    old_workers = set(children(old))
    session = ImapSession(master.port).login()
    with reaping(master) as started:
        with g.traffic() as traffic:
            new = upgraded(master, old)
            started.append(new)
            assert _pid_in(oldbin(master)) == old
            assert os.getsid(new) == new  # a session of its own: the old one's signals miss it
            assert cmdline(new).startswith("mailgate: master process")
            assert f'{new}#0: using inherited sockets from "' in master.log()
            os.kill(old, signal.SIGUSR2)
            assert wait_until(
                lambda: (
                    f"the changing binary signal is ignored: a new binary process {new} "
                    "is already running" in master.log()
                )
            )
            traffic.keep_going()
            session.fetch()
            os.kill(old, signal.SIGWINCH)  # daemon off: honoured because an upgrade is running
            # All but the worker holding the open session, which drains it first.
            assert wait_until(lambda: len(set(children(old)) & old_workers) == 1)
            traffic.keep_going()
            session.fetch()
            os.kill(old, signal.SIGQUIT)
            traffic.keep_going()
            session.fetch()
            session.logout()
            assert master.proc.wait(10) == 0
            assert alive(new)
            assert not oldbin(master).exists()
            assert _pid_in(master.pid_path) == new
            traffic.keep_going()
            assert wait_until(lambda: f"old master process {old} exited" in master.log())
        assert traffic.failures == []
        os.kill(new, signal.SIGQUIT)
        assert wait_until(lambda: not alive(new), 10)
        assert not master.pid_path.exists()


def test_rollback_gives_the_old_master_back_its_workers_and_pid_file(
    gate: Callable[..., Gate],
) -> None:
    g = gate()
    master, old = g.master, g.master.proc.pid
    session = ImapSession(master.port).login()
    with reaping(master) as started:
        with g.traffic() as traffic:
            new = upgraded(master, old)
            started.append(new)
            os.kill(old, signal.SIGWINCH)
            # Left: the new master and the worker draining the open session.
            assert wait_until(lambda: len(children(old)) == 2)
            traffic.keep_going()
            session.fetch()
            os.kill(old, signal.SIGHUP)  # rollback: workers again, with the running configuration
            assert wait_until(lambda: len(children(old)) == 4)
            session.fetch()
            assert "starting worker processes with the running configuration" in master.log()
            os.kill(new, signal.SIGQUIT)
            assert wait_until(lambda: not alive(new), 10)
            assert wait_until(lambda: _pid_in(master.pid_path) == old)
            assert not oldbin(master).exists()
            assert f"new binary process {new} exited with code 0" in master.log()
            traffic.keep_going()
            session.fetch()
            session.logout()
        assert traffic.failures == []
        master.signal(signal.SIGUSR2)  # a later upgrade is possible again
        assert wait_until(lambda: master.log().count("start new binary process") == 2)
        started.append(_wait_pid_change(master, old))


def _wait_pid_change(master: Master, old: int) -> int:
    assert wait_until(lambda: _pid_in(master.pid_path) not in (None, old), 10)
    pid = _pid_in(master.pid_path)
    assert pid is not None
    return pid


def test_a_new_binary_that_fails_to_start_hands_the_pid_file_back(
    gate: Callable[..., Gate],
) -> None:
    g = gate()
    master, old = g.master, g.master.proc.pid
    master.conf.write_text(g.config() + "bogus_directive on;\n")
    with g.traffic() as traffic:
        master.signal(signal.SIGUSR2)
        assert wait_until(lambda: "new binary process" in master.log() and "exited" in master.log())
        assert wait_until(lambda: _pid_in(master.pid_path) == old)
        traffic.keep_going()
    assert traffic.failures == []
    assert not oldbin(master).exists()
    assert 'unknown directive "bogus_directive"' in master.stderr()
    assert len(master.workers()) == 2


def test_new_master_outlives_a_ctrl_c_to_the_old_masters_group(
    gate: Callable[..., Gate],
) -> None:
    g = gate()
    master, old = g.master, g.master.proc.pid
    with reaping(master) as started:
        new = upgraded(master, old)
        started.append(new)
        os.killpg(old, signal.SIGINT)  # what a terminal sends the foreground group on Ctrl-C
        assert master.proc.wait(10) == 0
        assert alive(new)
        assert _pid_in(master.pid_path) == new  # the old master removed its .oldbin only
        assert not oldbin(master).exists()
        greet(master.port)
        greet(g.tls_port, g.tls())


def test_unix_socket_file_survives_the_old_masters_exit(
    gate: Callable[..., Gate],
    tmp_path: Path,
) -> None:
    path = tmp_path / "imap.sock"
    g = gate(servers=f"    server {{ listen unix:{path}; protocol imap; }}\n")
    master, old = g.master, g.master.proc.pid
    with reaping(master) as started:
        new = upgraded(master, old)
        started.append(new)
        os.kill(old, signal.SIGQUIT)
        assert master.proc.wait(10) == 0
        assert path.exists()
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(path))
            assert client.recv(100).startswith(b"* OK")
        os.kill(new, signal.SIGQUIT)
        assert wait_until(lambda: not alive(new), 10)
        assert not path.exists()  # the last master out removes it
