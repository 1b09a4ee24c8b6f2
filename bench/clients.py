"""Python clients: greeting latency, TLS 1.3 resumption, IMAP sessions, bulk FETCH, idle holders.

Loads that need more than one core of client run in forked processes (one GIL each); the
numbers every process returns are plain tuples so they cross the process boundary as is.
Clients never verify the certificate: the work is the same for both gateways, and a verify
would only add client CPU on a machine whose cores the servers share.
"""

from __future__ import annotations

import contextlib
import imaplib
import multiprocessing
import multiprocessing.connection
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from bench.servers import BULK_USER, LOOPBACK, PASSWORD, SMALL_USER

TIMEOUT = 30.0


def client_context(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def _read_line(sock: ssl.SSLSocket | socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before the end of the line: {data!r}")
        data += chunk
    return data


def _child_signals() -> None:
    """Forked clients drop the harness's SIGTERM handler: the pool stops them with SIGTERM."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def parallel(func: Callable[..., Any], jobs: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Run ``func(*job)`` for each job in its own forked process; return the results in order."""
    jobs = list(jobs)
    pool = multiprocessing.get_context("fork").Pool(len(jobs), initializer=_child_signals)
    try:
        results = pool.starmap(func, jobs)
        pool.close()
        return results
    finally:
        pool.terminate()
        pool.join()


# --- latency -------------------------------------------------------------------------------


def greeting_latencies(port: int, count: int) -> list[float]:
    """Seconds from TCP connect to the greeting's last byte, after a full TLS 1.3 handshake."""
    ctx = client_context(ssl.TLSVersion.TLSv1_3)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        with (
            socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw) as sock,
        ):
            _read_line(sock)
            samples.append(time.perf_counter() - start)
    return samples


# --- TLS 1.3 resumption ----------------------------------------------------------------------


def tls13_resumptions(port: int, duration: float) -> tuple[int, int, float]:
    """Resume one ticket again and again for ``duration`` s: (resumed, full, seconds).

    ``openssl s_time -reuse`` never reads TLS 1.3 tickets, hence this client. The first
    connection reads the greeting, so the ticket (sent right after the handshake) has arrived.
    """
    ctx = client_context(ssl.TLSVersion.TLSv1_3)
    with (
        socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw) as sock,
    ):
        _read_line(sock)
        session = sock.session
    resumed = full = 0
    start = time.monotonic()
    deadline = start + duration
    while time.monotonic() < deadline:
        with (
            socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, session=session) as sock,
        ):
            if sock.session_reused:
                resumed += 1
            else:
                full += 1
    return resumed, full, time.monotonic() - start


# --- IMAP sessions ---------------------------------------------------------------------------


def imap_session(port: int, tls: bool) -> None:
    """LOGIN, SELECT INBOX, FETCH the one small message, LOGOUT."""
    client: imaplib.IMAP4
    if tls:
        client = imaplib.IMAP4_SSL(LOOPBACK, port, ssl_context=client_context(), timeout=TIMEOUT)
    else:
        client = imaplib.IMAP4(LOOPBACK, port, timeout=TIMEOUT)
    try:
        client.login(SMALL_USER, PASSWORD)
        client.select("INBOX")
        status, data = client.fetch("1", "(BODY.PEEK[])")
        if status != "OK" or not data or data[0] is None:
            raise imaplib.IMAP4.error(f"FETCH failed: {status} {data!r}")
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def sessions_in_process(
    port: int, tls: bool, threads: int, duration: float
) -> tuple[int, int, float, float, str]:
    """``threads`` clients looping sessions until the deadline: (ok, failed, t0, t1, an error)."""
    counts = [0, 0]
    error = [""]
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + duration

    def loop() -> None:
        while time.monotonic() < deadline:
            try:
                imap_session(port, tls)
            except (OSError, imaplib.IMAP4.error) as err:
                with lock:
                    counts[1] += 1
                    error[0] = repr(err)
            else:
                with lock:
                    counts[0] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts[0], counts[1], start, time.monotonic(), error[0]


def sessions_rate(
    port: int, tls: bool, concurrency: int, duration: float, processes: int = 5
) -> tuple[float, int, str]:
    """Sessions per second with ``concurrency`` clients: (rate, failures, last error)."""
    if concurrency == 1:
        results = [sessions_in_process(port, tls, 1, duration)]
    else:
        processes = min(processes, concurrency)
        shares = [
            concurrency // processes + (i < concurrency % processes) for i in range(processes)
        ]
        results = parallel(sessions_in_process, [(port, tls, n, duration) for n in shares])
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    errors = [r[4] for r in results if r[4]]
    return ok / elapsed, failed, errors[0] if errors else ""


# --- bulk FETCH ------------------------------------------------------------------------------


def bulk_fetch(port: int) -> tuple[int, float]:
    """FETCH the bulk user's one message over TLS: (bytes received, seconds for the FETCH).

    A raw client, because imaplib copies a literal several times and would measure itself.
    """
    ctx = client_context()
    with (
        socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw) as sock,
    ):
        _read_line(sock)
        for tag, command in (
            (b"a", b"LOGIN %s %s" % (BULK_USER.encode(), PASSWORD.encode())),
            (b"b", b"SELECT INBOX"),
        ):
            sock.sendall(tag + b" " + command + b"\r\n")
            _read_until_tagged(sock, tag)
        start = time.perf_counter()
        sock.sendall(b"c FETCH 1 (BODY.PEEK[])\r\n")
        received = _read_until_tagged(sock, b"c")
        elapsed = time.perf_counter() - start
        sock.sendall(b"d LOGOUT\r\n")
    return received, elapsed


def _read_until_tagged(sock: ssl.SSLSocket, tag: bytes) -> int:
    """Read until the tagged reply line; only the tail is kept, so 50 MB cost no copies."""
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    marker = b"\r\n" + tag + b" "
    tail = b"\r\n"  # the reply may be the very first line
    total = 0
    while True:
        size = sock.recv_into(view)
        if size == 0:
            raise ConnectionError(f"closed before the tagged reply {tag!r}")
        total += size
        tail = (tail + bytes(view[max(0, size - 512) : size]))[-1024:]
        found = tail.rfind(marker)
        if found >= 0 and tail.endswith(b"\r\n"):
            line = tail[found + 2 :]
            if not line.startswith(tag + b" OK"):
                raise ConnectionError(f"{line!r}")
            return total


# --- idle connections ------------------------------------------------------------------------


def hold_idle(port: int, count: int, pipe: multiprocessing.connection.Connection) -> None:
    """Open ``count`` TLS connections, report, hold them until told, then close them.

    After each handshake the client drops its own TLS state (``detach``: no close_notify is
    sent) and keeps only the socket, so 10,000 connections cost the client little memory.
    """
    _child_signals()
    ctx = client_context(ssl.TLSVersion.TLSv1_3)
    held: list[socket.socket] = []
    errors = 0
    last_error = ""
    for _ in range(count):
        try:
            raw = socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)
            tls = ctx.wrap_socket(raw)
        except OSError as err:
            errors += 1
            last_error = repr(err)
            continue
        held.append(socket.socket(fileno=tls.detach()))
    pipe.send((len(held), errors, last_error))
    pipe.recv()
    for sock in held:
        sock.close()
    pipe.send("closed")


class IdleHolders:
    """``processes`` clients holding ``total`` idle connections between ``open`` and ``close``."""

    def __init__(self, port: int, total: int, processes: int = 4) -> None:
        self.port = port
        self.shares = [total // processes + (i < total % processes) for i in range(processes)]
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []

    def open(self, timeout: float) -> tuple[int, int, str]:
        """Start the holders; (connections held, failed connects, last error)."""
        fork = multiprocessing.get_context("fork")
        for share in self.shares:
            parent, child = fork.Pipe()
            proc = fork.Process(target=hold_idle, args=(self.port, share, child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        held = failed = 0
        last = ""
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"idle holders did not finish connecting in {timeout:.0f}s")
            ok, errors, error = pipe.recv()
            held, failed, last = held + ok, failed + errors, error or last
        return held, failed, last

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("close")
        for pipe in self.pipes:
            with contextlib.suppress(OSError, EOFError):
                pipe.poll(10) and pipe.recv()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()


# --- shared session cache capacity ------------------------------------------------------------


def cache_capacity(port: int, stored: int, probes: int) -> tuple[int, int]:
    """Store ``stored`` TLS 1.2 sessions (session IDs: the server must have tickets off), then
    try to resume ``probes`` of them, oldest to newest: (oldest index that resumed, resumed).

    A full cache evicts its oldest sessions, so ``stored - oldest`` is about how many the
    zone holds.
    """
    ctx = client_context(ssl.TLSVersion.TLSv1_2)
    sessions: list[ssl.SSLSession] = []
    for _ in range(stored):
        with (
            socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw) as sock,
        ):
            if sock.session is not None:
                sessions.append(sock.session)
    step = max(1, len(sessions) // probes)
    oldest = -1
    resumed = 0
    for index in range(0, len(sessions), step):
        with (
            socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, session=sessions[index]) as sock,
        ):
            if sock.session_reused:
                resumed += 1
                if oldest < 0:
                    oldest = index
    return oldest, resumed
