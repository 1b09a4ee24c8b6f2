"""Workers that die under load: the listeners must never be left without a worker.

A worker killed by a signal (the OOM killer, ``kill -9``, a crash) is replaced at once, as
nginx does, however young it was; only a worker that fails its own start-up is respawned with
a back-off. The storm below SIGKILLs a random worker every 0.3 s while clients keep
connecting: a back-off for young deaths left both workers down for seconds and clients
waited in the listen backlog (3 of 345 over 10 s before this was fixed).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

import pytest

from tests.support.master import Master
from tests.support.pki import TlsFiles
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.slow

GREETING = b"* OK IMAP4 ready\r\n"
STORM_SECONDS = 8.0
KILL_EVERY = 0.3
CLIENTS = 4
HUNG = 2.0  # a client that waits longer than this for its greeting is a hung client


def storm_config(tls: TlsFiles, tls_port: int) -> str:
    # ``{port}``, ``{pid}``, ``{log}`` are filled in by the mailgate fixture.
    return f"""\
daemon off;
worker_processes 2;
error_log {{log}} notice;
pid {{pid}};
events {{{{ worker_connections 256; }}}}
mail {{{{
    server_name localhost;
    ssl_certificate {tls.cert};
    ssl_certificate_key {tls.key};
    ssl_session_cache shared:storm:1m;
    ssl_session_tickets off;
    server {{{{ listen 127.0.0.1:{{port}}; protocol imap; proxy_pass 127.0.0.1:1; }}}}
    server {{{{ listen 127.0.0.1:{tls_port} ssl; protocol imap; proxy_pass 127.0.0.1:1; }}}}
}}}}
"""


@dataclass
class Waits:
    """How long each client connection waited for its greeting (lock-protected)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seconds: list[float] = field(default_factory=list)
    cut: int = 0  # connections a dying worker closed: the client saw EOF or a reset

    def add(self, waited: float | None) -> None:
        with self.lock:
            if waited is None:
                self.cut += 1
            else:
                self.seconds.append(waited)


def greeting_wait(port: int) -> float | None:
    """Seconds from connect() to the full greeting; None if the connection was cut."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        data = b""
        while not data.endswith(b"\r\n"):
            try:
                chunk = sock.recv(100)
            except ConnectionError:
                return None
            if not chunk:
                return None
            data += chunk
    assert data == GREETING
    return time.monotonic() - start


def client_loop(port: int, waits: Waits, stop: threading.Event) -> None:
    while not stop.is_set():
        waits.add(greeting_wait(port))


def kill_random_workers(master: Master, until: float) -> int:
    """SIGKILL a random worker every KILL_EVERY seconds until ``until``; returns the kills."""
    kills = 0
    while time.monotonic() < until:
        workers = master.workers()
        if workers:
            with suppress(ProcessLookupError):
                os.kill(random.choice(workers), signal.SIGKILL)
                kills += 1
        time.sleep(KILL_EVERY)  # the storm's own pace, not a wait for the master
    return kills


def tls_client(tls: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # session IDs from the shared cache
    return ctx


def greet_tls(ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    assert conn.recv(100) == GREETING
    return conn


def test_kill_storm_leaves_no_client_hanging_and_resumption_works(
    mailgate: Callable[..., Master], tls_files: TlsFiles
) -> None:
    tls_port = free_port()
    master = mailgate(text=storm_config(tls_files, tls_port))
    waits, stop = Waits(), threading.Event()
    clients = [
        threading.Thread(target=client_loop, args=(master.port, waits, stop), daemon=True)
        for _ in range(CLIENTS)
    ]
    for thread in clients:
        thread.start()
    try:
        kills = kill_random_workers(master, time.monotonic() + STORM_SECONDS)
    finally:
        stop.set()
        for thread in clients:
            thread.join(40)
    hung = [waited for waited in waits.seconds if waited > HUNG]
    assert hung == [], f"{len(hung)} of {len(waits.seconds)} waited: {sorted(hung)[-5:]}"
    assert len(waits.seconds) > 100
    assert kills >= STORM_SECONDS / KILL_EVERY / 2
    assert "respawning in" not in master.log()  # no back-off for killed workers
    master.wait_workers(2)
    ctx = tls_client(tls_files)
    with greet_tls(ctx, tls_port, None) as first:
        session = first.session
    with greet_tls(ctx, tls_port, session) as second:
        assert second.session_reused


def replaced(master: Master, gone: int) -> bool:
    workers = master.workers()
    return len(workers) == 1 and gone not in workers


def test_a_young_worker_killed_is_replaced_at_once(mailgate: Callable[..., Master]) -> None:
    master = mailgate(workers=1)
    for _ in range(3):
        (young,) = master.wait_workers(1)
        os.kill(young, signal.SIGKILL)
        # Killed well inside its first second: replaced without a back-off all the same.
        assert wait_until(lambda gone=young: replaced(master, gone), timeout=1.0), master.log()
    assert "respawning in" not in master.log()
