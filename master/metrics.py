"""The Prometheus scrape endpoint: a process of its own, and the master's side of it.

Every mailgate process writes its metrics into one directory (prometheus_client's multiprocess
mode, see :mod:`mailgate.worker.observe.metrics`); the metrics process answers ``GET /metrics`` by
summing those files with a fresh registry per scrape. It runs apart from the master so that a
slow or stuck scraper never delays the master's signal handling, nor a worker's connections.

The master's part, in order:

* :func:`prepare_environment` sets ``PROMETHEUS_MULTIPROC_DIR`` before anything imports
  prometheus_client, only when ``metrics_listen`` is set: a fresh private folder
  (``mkdtemp``, 0700, given to the workers' user), or the old master's on a binary upgrade.
  With metrics off nothing is created. :func:`release_directory` removes it at a cold stop.
* :class:`MetricsServer` binds ``metrics_listen`` in the master (so ``bind() failed`` is
  reported like any listener's), starts the process, restarts it if it dies, keeps it across
  a reload with the same address and replaces it when the address changes. The socket has
  ``SO_REUSEPORT``: during a binary upgrade the new master binds the same address while the
  old one still serves, and the endpoint never stops answering.
* :func:`mark_dead` is called for every child the master reaps, so the live gauges of dead
  processes stop counting.

The process itself (``python -m mailgate.master.metrics --fd N``) is exec'd fresh, so it holds
no copy of the master's state, listeners or TLS keys; it exits when the master goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http
import os
import selectors
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import MutableMapping, Sequence
from typing import Protocol

from mailgate.config import model

ENV = "PROMETHEUS_MULTIPROC_DIR"
UPGRADE_ENV = "MAILGATE_FDS"  # present: started by USR2 with the old master's sockets
TITLE = "mailgate: metrics process"
CHILD_FD = 3  # where the metrics process finds its listening socket
BACKLOG = 64
QUICK_DEATH = 1.0  # a metrics process dying sooner than this is not respawned
STOP_WAIT = 1.0  # seconds between TERM and KILL when stopping it
CLIENT_TIMEOUT = 10.0  # seconds a scrape connection may last in all, however it drips
MAX_SCRAPERS = 16  # connections served at once; more are closed at accept
MAX_HEAD = 8192  # bytes of request line and headers
PARENT_POLL = 0.5  # how often the metrics process checks that its master still runs
METRICS_PATH = "/metrics"
# Signals the master handles: the metrics process starts with their default actions.
_MASTER_SIGNALS = (
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGCHLD,
)


class MetricsError(Exception):
    """The scrape endpoint cannot be set up; ``str()`` is the line to log."""


class Log(Protocol):
    """The error log as the master's metrics side uses it."""

    def alert(self, message: str) -> None: ...
    def notice(self, message: str) -> None: ...


# -- the multiprocess directory ---------------------------------------------------------------

PREFIX = "mailgate-metrics-"  # mkdtemp's prefix: a folder of ours, removed at a cold stop
_created: str | None = None  # the folder this master made (or took over from its old master)


def prepare_environment(
    listen: model.MetricsListen | None,
    owner: int | None = None,
    environ: MutableMapping[str, str] = os.environ,
) -> str | None:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` when metrics are on; returns the folder, or None.

    Must run before the first ``import prometheus_client`` in the master (the value class is
    chosen at import). With metrics off nothing is created and the variable is removed: every
    process counts in memory. With metrics on the folder is a fresh ``mkdtemp`` (0700, a
    random name nobody can take first), given to ``owner``, the workers' user, who writes
    there. A folder already named in the environment is kept if it is private: the old
    master's on a binary upgrade (``MAILGATE_FDS`` set; its workers still write there), or
    one the admin chose (its old files are wiped on a cold start). Raises ``MetricsError``.
    """
    global _created
    if "prometheus_client" in sys.modules:
        raise MetricsError(
            "prometheus_client was imported before the metrics directory was set: "
            "metrics would not be shared between processes"
        )
    if listen is None:
        environ.pop(ENV, None)
        return None
    path = environ.get(ENV)
    if path:
        _check_private(path, owner)
        upgrade = UPGRADE_ENV in environ
        if upgrade and _is_ours(path):
            _created = path  # the old master's folder: ours to remove once it has gone
        if not upgrade and not _live_writers(path):
            _wipe(path)
    else:
        try:
            path = _created = tempfile.mkdtemp(prefix=PREFIX)
        except OSError as err:
            raise MetricsError(f"mkdtemp() failed ({err.errno}: {err.strerror})") from err
    if owner is not None:
        try:
            os.chown(path, owner, -1)
        except OSError as err:
            raise MetricsError(f'chown() "{path}" failed ({err.errno}: {err.strerror})') from err
    environ[ENV] = path
    return path


def release_directory() -> None:
    """Cold stop: remove the folder this master made (not an admin's, not a new binary's)."""
    global _created
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
        _created = None


def _is_ours(path: str) -> bool:
    name = os.path.basename(path)
    return os.path.dirname(path) == tempfile.gettempdir() and name.startswith(PREFIX)


def _check_private(path: str, owner: int | None) -> None:
    try:
        info = os.lstat(path)
    except OSError as err:
        raise MetricsError(f'stat() "{path}" failed ({err.errno}: {err.strerror})') from err
    # Never follow a link or write where another user could plant or read files.
    owners = {os.geteuid(), owner}
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners or info.st_mode & 0o077:
        raise MetricsError(f'"{path}" ({ENV}) is not a private folder of mailgate\'s user')


def _file_pid(name: str) -> int | None:
    """``counter_1234.db`` -> 1234 (prometheus_client's file names)."""
    stem = name.removesuffix(".db")
    digits = stem.rsplit("_", 1)[-1]
    return int(digits) if stem != name and digits.isdigit() else None


def _is_mailgate(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"mailgate" in fh.read()
    except (ProcessLookupError, FileNotFoundError):
        return False
    except OSError:
        return True  # alive but not ours to inspect: do not wipe on a guess


def _live_writers(path: str) -> bool:
    """Whether a running mailgate process (not this one) still writes in ``path``."""
    me = os.getpid()
    pids = {_file_pid(name) for name in os.listdir(path)}
    return any(pid is not None and pid != me and _is_mailgate(pid) for pid in pids)


def _wipe(path: str) -> None:
    for name in os.listdir(path):
        if name.endswith(".db"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))


def mark_dead(pid: int) -> None:
    """For the master's reap loop: the ``live*`` gauges of ``pid`` stop counting."""
    path = os.environ.get(ENV)
    if not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


# -- the master's side --------------------------------------------------------------------------


def _same(a: model.MetricsListen | None, b: model.MetricsListen | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.family, a.host, a.port) == (b.family, b.host, b.port)


def bind(listen: model.MetricsListen) -> socket.socket:
    """A listening socket for ``listen``, with ``SO_REUSEPORT`` (see the module docstring)."""
    sock = socket.socket(listen.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listen.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(BACKLOG)
    except OSError as err:
        sock.close()
        raise MetricsError(
            f"bind() to {listen.text} failed ({err.errno}: {err.strerror}) for metrics_listen"
        ) from err
    return sock


class MetricsServer:
    """The metrics process as the master sees it: its socket, its pid, its restarts."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.listen: model.MetricsListen | None = None
        self.sock: socket.socket | None = None
        self.pid = 0
        self.active = False  # start() was called: keep a process running
        self._spawned_at = 0.0

    def configure(self, listen: model.MetricsListen | None) -> None:
        """Take ``metrics_listen`` (at start and on every reload).

        The same address keeps the socket and the running process; another one is bound
        first (so a failure leaves everything as it was: raises ``MetricsError``), then the
        old process is stopped and, once started, a new one serves the new socket.
        """
        if _same(listen, self.listen) and (self.sock is not None or listen is None):
            return
        sock = bind(listen) if listen is not None else None
        self._stop_process()
        if self.sock is not None:
            self.sock.close()
        self.listen, self.sock = listen, sock
        if self.active:
            self._spawn()

    def start(self) -> None:
        """Start serving (in the master that will reap the process, after daemonizing)."""
        self.active = True
        if self.pid == 0:
            self._spawn()

    def reaped(self, pid: int, status: int) -> bool:
        """For the reap loop: True if ``pid`` was the metrics process (respawned if due)."""
        if pid == 0 or pid != self.pid:
            return False
        self.pid = 0
        how = (
            f"on signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"with code {os.WEXITSTATUS(status)}"
        )
        if time.monotonic() - self._spawned_at < QUICK_DEATH:
            self.log.alert(
                f"metrics process {pid} exited {how} at once, "
                "not respawning it until the next reload"
            )
            return True
        self.log.alert(f"metrics process {pid} exited {how}, respawning")
        self._spawn()
        return True

    def stop(self) -> None:
        """Stop the process and close the socket (master exit)."""
        self.active = False
        self._stop_process()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.listen = None

    def _spawn(self) -> None:
        if not self.active or self.sock is None or self.pid:
            return
        argv = [sys.executable, "-m", "mailgate.master.metrics", "--fd", str(CHILD_FD)]
        try:
            # dup2 onto CHILD_FD gives the child a copy without close-on-exec; the master's
            # own socket stays close-on-exec, so workers never inherit the metrics port.
            self.pid = os.posix_spawn(
                sys.executable,
                argv,
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, self.sock.fileno(), CHILD_FD)],
                setsigdef=_MASTER_SIGNALS,
                setsigmask=(),
            )
        except OSError as err:
            self.log.alert(f"posix_spawn() of the metrics process failed ({err})")
            return
        self._spawned_at = time.monotonic()
        assert self.listen is not None
        self.log.notice(f"start metrics process {self.pid} on {self.listen.text}")

    def _stop_process(self) -> None:
        pid, self.pid = self.pid, 0
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while True:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break  # reaped already
            if done:
                break
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        mark_dead(pid)


# -- the metrics process ----------------------------------------------------------------------


def scrape() -> bytes:
    """Every process's metrics, summed, in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()  # fresh per scrape, as the multiprocess docs require
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _reply(code: int, body: bytes, content_type: str = "text/plain") -> bytes:
    reason = http.HTTPStatus(code).phrase
    head = (
        f"HTTP/1.1 {code} {reason}\r\nServer: mailgate-metrics\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def respond(head: bytes) -> bytes:
    """The whole reply to a request whose head (request line and headers) is ``head``."""
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _reply(400, b"bad request\n")
    method, target = parts[0], parts[1]
    if method != b"GET":
        return _reply(405, b"method not allowed\n")
    if target.split(b"?", 1)[0] != METRICS_PATH.encode():
        return _reply(404, b"not found\n")
    from prometheus_client import CONTENT_TYPE_LATEST

    try:
        body = scrape()
    except Exception as err:  # a damaged file must not end the process
        sys.stderr.write(f"mailgate: metrics scrape failed: {err!r}\n")
        return _reply(500, b"scrape failed\n")
    return _reply(200, body, CONTENT_TYPE_LATEST)


class _Scraper:
    """One scrape connection: the request head read so far, then the reply left to send."""

    __slots__ = ("deadline", "head", "out", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline  # fixed at accept: no drip of bytes can push it back
        self.head = bytearray()
        self.out: memoryview | None = None


class ScrapeServer:
    """The scrape endpoint on an inherited, already listening socket: one thread, one selector.

    A thread per scrape (``ThreadingHTTPServer``) let anyone who reaches the port start as
    many threads as it opened connections. Here each scraper costs a few hundred bytes, at
    most ``MAX_SCRAPERS`` are served at once (more are closed at accept), a request head is
    capped at ``MAX_HEAD`` bytes, and each connection has ``CLIENT_TIMEOUT`` seconds in all.
    """

    def __init__(self, sock: socket.socket, parent: int) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.parent = parent
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)
        self.scrapers: dict[int, _Scraper] = {}

    def serve_forever(self) -> None:
        """Serve until the master is gone (checked every ``PARENT_POLL`` seconds)."""
        while os.getppid() == self.parent:
            for key, _mask in self.selector.select(PARENT_POLL):
                if key.data is None:
                    self._accept()
                else:
                    self._step(key.data)
            now = time.monotonic()
            for scraper in [s for s in self.scrapers.values() if s.deadline <= now]:
                self._close(scraper)

    def server_close(self) -> None:
        for scraper in list(self.scrapers.values()):
            self._close(scraper)
        self.selector.close()
        self.sock.close()

    def _accept(self) -> None:
        try:
            conn, _peer = self.sock.accept()
        except OSError:
            return  # gone before we took it, or EAGAIN; the cap keeps us far from EMFILE
        if len(self.scrapers) >= MAX_SCRAPERS:
            conn.close()
            return
        conn.setblocking(False)
        scraper = _Scraper(conn, time.monotonic() + CLIENT_TIMEOUT)
        self.scrapers[conn.fileno()] = scraper
        self.selector.register(conn, selectors.EVENT_READ, scraper)

    def _step(self, scraper: _Scraper) -> None:
        try:
            if scraper.out is None:
                self._read(scraper)
            if scraper.out is not None:
                sent = scraper.sock.send(scraper.out)
                scraper.out = scraper.out[sent:]
                if not scraper.out:
                    self._close(scraper)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(scraper)

    def _read(self, scraper: _Scraper) -> None:
        data = scraper.sock.recv(4096)
        if not data:
            self._close(scraper)
            return
        scraper.head += data
        end = scraper.head.find(b"\r\n\r\n")
        if end >= 0:
            reply = respond(bytes(scraper.head[:end]))
        elif len(scraper.head) > MAX_HEAD:
            reply = _reply(431, b"request header too large\n")
        else:
            return
        scraper.out = memoryview(reply)
        self.selector.modify(scraper.sock, selectors.EVENT_WRITE, scraper)

    def _close(self, scraper: _Scraper) -> None:
        if self.scrapers.pop(scraper.sock.fileno(), None) is None:
            return
        self.selector.unregister(scraper.sock)
        scraper.sock.close()


def _close_inherited(keep: int) -> None:
    # Only stdio and our socket: the master's listeners are inheritable (for USR2).
    max_fd = os.sysconf("SC_OPEN_MAX")
    os.closerange(3, keep)
    os.closerange(keep + 1, max_fd if max_fd > 0 else 65536)


def _quit(signo: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """The metrics process: serve until the master stops it or goes away."""
    parser = argparse.ArgumentParser(prog="mailgate-metrics")
    parser.add_argument("--fd", type=int, default=CHILD_FD)
    args = parser.parse_args(argv)
    parent = os.getppid()
    _close_inherited(args.fd)
    import setproctitle

    setproctitle.setproctitle(TITLE)
    for signo in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
        signal.signal(signo, signal.SIG_IGN)  # nothing to reload: every scrape reads anew
    for signo in (signal.SIGQUIT, signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, _quit)
    try:
        sock = socket.socket(fileno=args.fd)
    except OSError as err:
        if err.errno == errno.EBADF:
            sys.stderr.write(f"mailgate: metrics process: no socket on fd {args.fd}\n")
            return 1
        raise
    from mailgate.worker.observe import metrics as worker_metrics

    worker_metrics.build_info()
    server = ScrapeServer(sock, parent)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
