"""Session resumption across the real master's workers: shared zones, tickets, reloads.

A plain IMAP server with ``listen ... ssl`` completes the handshake and sends the greeting,
which is all a resumption needs. Which worker served a connection comes from ``ss -tnpH``
(the pid holding the accepted socket); each test connects until it has landed on every one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailgate.master.metrics import directory as metrics_directory
from mailgate.shm import segment, zones
from tests.support.master import Master, master_ready, spawn_master
from tests.support.metrics import parse, reload, scrape_directory, total
from tests.support.pki import TlsFiles
from tests.support.processes import children, free_port, wait_until
from tests.support.resumption import (
    TLS12,
    TLS13,
    attempts,
    client_context,
    connect,
    resume_on_every_worker,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_leftover_zones() -> Iterator[None]:
    """The ``mailgate`` fixture ends masters with SIGKILL, a crash: reclaim what they left."""
    yield
    for name in segment.instance_segments(""):
        zones.remove_orphan(name)


CONFIG = """\
daemon off;
worker_processes {workers};
error_log {{log}} info;
pid {{pid}};
{main}
events {{{{
    worker_connections 64;
}}}}
mail {{{{
    ssl_certificate {cert};
    ssl_certificate_key {key};
    {cache}
    server {{{{
        listen 127.0.0.1:{{port}} ssl;
        protocol imap;
        proxy_pass 127.0.0.1:1;
    }}}}
}}}}
"""


def start(
    mailgate: Callable[..., Master], tls_files: TlsFiles, workers: int, cache: str, main: str = ""
) -> Master:
    text = CONFIG.format(
        workers=workers, cert=tls_files.cert, key=tls_files.key, cache=cache, main=main
    )
    return mailgate(text=text, workers=workers)


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private metrics folder the masters started from now on write to (metrics are on
    only with ``metrics_listen``: see :func:`metrics_on`)."""
    path = tmp_path / "metrics"
    path.mkdir(mode=0o700)
    monkeypatch.setenv(metrics_directory.ENV, str(path))
    return path


def metrics_on() -> str:
    return f"metrics_listen 127.0.0.1:{free_port()};"


SHARED = "ssl_session_cache shared:SSL:1m;"


@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize(
    ("version", "tickets"),
    [(TLS12, "off"), (TLS12, "on"), (TLS13, "on"), (TLS13, "off")],
    ids=["tls12-ids", "tls12-tickets", "tls13-tickets", "tls13-stateful"],
)
def test_every_worker_resumes_from_the_shared_zone(
    mailgate: Callable[..., Master],
    tls_files: TlsFiles,
    workers: int,
    version: ssl.TLSVersion,
    tickets: str,
) -> None:
    cache = f"{SHARED} ssl_session_tickets {tickets};"
    master = start(mailgate, tls_files, workers, cache)
    ctx = client_context(tls_files, version)
    resume_on_every_worker(master, ctx, chain=version is TLS13 and tickets == "off")


@pytest.mark.parametrize(
    ("version", "tickets"),
    [(TLS12, "off"), (TLS13, "on")],
    ids=["tls12-ids", "tls13-tickets"],
)
def test_sessions_survive_a_reload(
    mailgate: Callable[..., Master], tls_files: TlsFiles, version: ssl.TLSVersion, tickets: str
) -> None:
    master = start(mailgate, tls_files, 2, f"{SHARED} ssl_session_tickets {tickets};")
    ctx = client_context(tls_files, version)
    _, session, _ = connect(master, ctx, None)
    old = set(master.workers())
    master.signal(signal.SIGHUP)
    assert wait_until(lambda: not (set(master.workers()) & old) and len(master.workers()) == 2)
    reused, _, _ = connect(master, ctx, session)
    assert reused
    resume_on_every_worker(master, ctx)


def test_builtin_resumes_only_within_one_worker(
    mailgate: Callable[..., Master], tls_files: TlsFiles
) -> None:
    master = start(mailgate, tls_files, 2, "ssl_session_cache builtin; ssl_session_tickets off;")
    ctx = client_context(tls_files, TLS12)
    _, session, first = connect(master, ctx, None)
    seen: dict[int, bool] = {}
    for _ in attempts():
        reused, _, pid = connect(master, ctx, session)
        seen.setdefault(pid, reused)
        assert reused is (pid == first)
        if len(seen) == 2:
            return
    raise AssertionError(f"reached only {seen}")


@pytest.mark.parametrize("cache", ["off", "none"])
def test_off_and_none_resume_by_ticket_only(
    mailgate: Callable[..., Master], tls_files: TlsFiles, cache: str
) -> None:
    """nginx: no session IDs are kept; tickets (keys made before fork) work on every worker."""
    master = start(mailgate, tls_files, 2, f"ssl_session_cache {cache}; ssl_session_tickets off;")
    ctx = client_context(tls_files, TLS12)
    _, session, _ = connect(master, ctx, None)
    assert not any(connect(master, ctx, session)[0] for _ in range(6))
    master = start(mailgate, tls_files, 2, f"ssl_session_cache {cache};")
    resume_on_every_worker(master, ctx)


def test_client_dropping_tcp_without_close_notify_still_resumes(
    mailgate: Callable[..., Master], tls_files: TlsFiles
) -> None:
    master = start(mailgate, tls_files, 2, f"{SHARED} ssl_session_tickets off;")
    ctx = client_context(tls_files, TLS12)
    raw = socket.create_connection(("127.0.0.1", master.port), timeout=5)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    assert sock.recv(100).startswith(b"* OK")
    session = sock.session
    # RST, no close_notify: the worker frees an SSL that was never shut down.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    socket.socket(fileno=sock.detach()).close()
    time.sleep(0.2)
    resume_on_every_worker_from(master, ctx, session)


def resume_on_every_worker_from(
    master: Master, ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> None:
    workers, served = set(master.workers()), set()
    for _ in attempts():
        reused, _, pid = connect(master, ctx, session)
        assert reused
        served.add(pid)
        if served >= workers:
            return
    raise AssertionError(f"only reached {served}")


# -- openssl s_client -sess_out / -sess_in chains ------------------------------------------


def s_client(master: Master, tls_files: TlsFiles, *args: str) -> tuple[str, int]:
    """One s_client connection, held open until ``ss`` has named the worker."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{master.port}"]
    argv += ["-CAfile", str(tls_files.ca), "-servername", "localhost", *args]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("* OK"):
                break
        pids = _established_pids(master.port)
        proc.stdin.close()
        out = "".join(lines) + proc.stdout.read()
        proc.wait(10)
    assert len(pids) == 1, (pids, out)
    return out, pids.pop()


def _established_pids(port: int) -> set[int]:
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize(
    ("args", "tickets"),
    [
        (("-tls1_2", "-no_ticket"), "off"),
        (("-tls1_2",), "on"),
        (("-tls1_3",), "on"),
        (("-tls1_3",), "off"),
    ],
    ids=["tls12-ids", "tls12-tickets", "tls13-tickets", "tls13-stateful"],
)
def test_s_client_chain_resumes_on_every_worker(
    mailgate: Callable[..., Master],
    tls_files: TlsFiles,
    tmp_path: Path,
    *,
    workers: int,
    args: tuple[str, ...],
    tickets: str,
) -> None:
    master = start(mailgate, tls_files, workers, f"{SHARED} ssl_session_tickets {tickets};")
    session = str(tmp_path / "session.pem")
    out, _ = s_client(master, tls_files, *args, "-sess_out", session)
    assert "New," in out
    served: set[int] = set()
    for _ in attempts():
        out, pid = s_client(master, tls_files, *args, "-sess_in", session, "-sess_out", session)
        assert "Reused," in out, out
        served.add(pid)
        if served >= set(master.workers()):
            return
    raise AssertionError(f"only reached {served}")


# -- a second master of the same instance (what an upgrade's new master does) ------------------


def test_a_second_master_of_the_instance_attaches_and_the_last_one_unlinks(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """Same prefix and configuration path: the new master finds the old one's zone by name;
    the old one leaving does not unlink it; the last one's cold stop does."""
    conf = tmp_path / "mailgate.conf"
    instance = segment.instance_id(str(tmp_path), str(conf))
    masters = []
    try:
        for n in range(2):
            port, pid, log = free_port(), tmp_path / f"m{n}.pid", tmp_path / f"m{n}.log"
            body = CONFIG.format(
                workers=2, cert=tls_files.cert, key=tls_files.key, cache=SHARED, main=""
            ).format(port=port, pid=pid, log=log)
            conf.write_text(body)  # the same file for both: the same instance
            proc = spawn_master(["-c", str(conf)], tmp_path / f"stderr{n}.txt")
            master = Master(proc, conf, pid, log, tmp_path / f"stderr{n}.txt", port)
            masters.append(master)
            assert wait_until(lambda m=master: master_ready(m, 2), 10), master.log()
            if n == 0:
                ctx = client_context(tls_files, TLS12)
                ctx.options |= ssl.OP_NO_TICKET
                _, session, _ = connect(master, ctx, None)
        old, new = masters
        assert connect(new, ctx, session)[0]  # stored by the old master's workers
        old.signal(signal.SIGQUIT)
        old.wait(10)
        assert segment.instance_segments(instance)  # the new master still uses it
        assert connect(new, ctx, session)[0]
        new.signal(signal.SIGQUIT)
        new.wait(10)
        assert segment.instance_segments(instance) == []
    finally:
        for master in masters:
            if master.proc.poll() is None:
                master.kill()


@pytest.mark.parametrize(
    ("version", "tickets"),
    [(TLS12, "off"), (TLS12, "on")],
    ids=["tls12-ids", "tls12-tickets"],
)
def test_sessions_survive_a_binary_upgrade(
    mailgate: Callable[..., Master], tls_files: TlsFiles, version: ssl.TLSVersion, tickets: str
) -> None:
    """Beyond nginx: the new master attaches to the old one's zone (and its ticket keys)."""
    master = start(mailgate, tls_files, 2, f"{SHARED} ssl_session_tickets {tickets};")
    ctx = client_context(tls_files, version)
    _, session, _ = connect(master, ctx, None)
    old = master.pid
    master.signal(signal.SIGUSR2)
    assert wait_until(lambda: _pid_file(master) not in (None, old), 10), master.log()
    new = _pid_file(master)
    assert new is not None
    try:
        assert wait_until(lambda: len(children(new)) == 2, 10), master.log()
        os.kill(old, signal.SIGWINCH)  # master.pid now reads the new master's pid file
        os.kill(old, signal.SIGQUIT)
        assert master.wait(10) == 0
        served: set[int] = set()
        for _ in attempts():
            reused, _, pid = connect(master, ctx, session)
            assert reused, f"new worker {pid} did not resume"
            served.add(pid)
            if served >= set(children(new)):
                break
        assert served == set(children(new))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(new, signal.SIGKILL)


def _pid_file(master: Master) -> int | None:
    try:
        text = master.pid_path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def test_ticket_made_under_key_a_resumes_after_the_keys_become_b_a(
    mailgate: Callable[..., Master], tls_files: TlsFiles, tmp_path: Path, metrics_dir: Path
) -> None:
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    key_a.write_bytes(os.urandom(80))
    key_b.write_bytes(os.urandom(48))
    master = start(mailgate, tls_files, 2, f"ssl_session_ticket_key {key_a};", metrics_on())
    ctx = client_context(tls_files, TLS12)
    _, session, _ = connect(master, ctx, None)
    text = master.conf.read_text()
    rotated = f"ssl_session_ticket_key {key_b}; ssl_session_ticket_key {key_a};"
    master.conf.write_text(text.replace(f"ssl_session_ticket_key {key_a};", rotated))
    reload(master)  # the metrics process is a child too: count worker processes only
    reused, renewed, _ = connect(master, ctx, session)
    assert reused, master.log()
    reused, _, _ = connect(master, ctx, renewed)
    assert reused

    def counted() -> bool:
        fam = parse(scrape_directory(metrics_dir))
        return total(fam, "mailgate_ssl_tickets_previous_key_total", zone="files") == 1

    assert wait_until(counted), scrape_directory(metrics_dir)


def test_shared_zone_counts_lookups_hits_and_stores_in_the_scrape(
    mailgate: Callable[..., Master], tls_files: TlsFiles, metrics_dir: Path
) -> None:
    master = start(mailgate, tls_files, 2, f"{SHARED} ssl_session_tickets off;", metrics_on())
    ctx = client_context(tls_files, TLS12)
    _, session, _ = connect(master, ctx, None)
    for _ in range(4):
        reused, _, _ = connect(master, ctx, session)
        assert reused

    def counted() -> bool:
        fam = parse(scrape_directory(metrics_dir))
        return total(fam, "mailgate_ssl_session_cache_hits_total", zone="SSL") >= 4

    assert wait_until(counted), scrape_directory(metrics_dir)
    fam = parse(scrape_directory(metrics_dir))
    assert total(fam, "mailgate_ssl_session_cache_stores_total", zone="SSL") >= 1
    assert total(fam, "mailgate_ssl_session_cache_lookups_total", zone="SSL") >= 4
    assert total(fam, "mailgate_ssl_session_cache_entries", zone="SSL") >= 1
    assert total(fam, "mailgate_ssl_session_cache_bytes", zone="SSL") > 0
