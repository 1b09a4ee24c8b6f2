"""TLS resumption through the real master: which worker served a connection, and whether
every worker resumed the session offered (the shared session cache and ticket keys)."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

from tests.support.master import Master
from tests.support.pki import TlsFiles

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3

# Accepts go to whichever worker wakes first: on a loaded 2-core machine one of four workers
# can miss 60 connections in a row, so the tests that must reach every worker try for a while.
REACH_EVERY_WORKER = 30.0  # seconds


def attempts() -> Iterator[None]:
    """Keep connecting until the caller has what it waits for, for at most REACH_EVERY_WORKER."""
    deadline = time.monotonic() + REACH_EVERY_WORKER
    while time.monotonic() < deadline:
        yield None


def serving_pid(port: int, client_port: int) -> int:
    """The pid that holds the server side of our connection."""
    query = f"( sport = :{port} and dport = :{client_port} )"
    for _ in range(50):
        out = subprocess.run(
            ["ss", "-tnpH", "state", "established", query],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found = re.search(r"pid=(\d+)", out)
        if found:
            return int(found.group(1))
        time.sleep(0.01)
    raise AssertionError(f"no server socket for client port {client_port}")


def client_context(tls_files: TlsFiles, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls_files.ca))
    ctx.maximum_version = version
    return ctx


def connect(
    master: Master, ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bool, ssl.SSLSession, int]:
    """One connection: (resumed, the session to offer next, the worker's pid)."""
    raw = socket.create_connection(("127.0.0.1", master.port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
        pid = serving_pid(master.port, sock.getsockname()[1])
        assert sock.recv(100).startswith(b"* OK")  # TLS 1.3 tickets arrive before it
        reused = bool(sock.session_reused)  # None only before a handshake
        assert sock.session is not None
        return reused, sock.session, pid


def resume_on_every_worker(master: Master, ctx: ssl.SSLContext, *, chain: bool = False) -> set[int]:
    """Offer one session (or, with ``chain``, each connection's) until every worker took one."""
    workers = set(master.workers())
    reused, session, _ = connect(master, ctx, None)
    assert not reused
    served: set[int] = set()
    for _ in attempts():
        reused, newer, pid = connect(master, ctx, session)
        assert reused, f"worker {pid} did not resume ({len(served)} workers did)"
        served.add(pid)
        if chain:
            session = newer
        if served >= workers:
            return served
    raise AssertionError(f"only reached workers {served} of {workers}")
