"""The metrics process: the HTTP scrape endpoint, one thread and one selector.

The master binds the socket (:func:`bind`, so ``bind() failed`` is reported like any
listener's) and starts this program with it on ``--fd`` (see
:mod:`mailgate.master.metrics.supervisor`). The socket has ``SO_REUSEPORT``: during a binary
upgrade the new master binds the same address while the old one still serves, and the
endpoint never stops answering. Each ``GET /metrics`` sums every process's files with a fresh
registry. The process exits when the master goes away.
"""

from __future__ import annotations

import argparse
import errno
import http
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence

from mailgate.config import model
from mailgate.master.metrics import MetricsError

TITLE = "mailgate: metrics process"
CHILD_FD = 3  # where the metrics process finds its listening socket
BACKLOG = 64
CLIENT_TIMEOUT = 10.0  # seconds a scrape connection may last in all, however it drips
MAX_SCRAPERS = 16  # connections served at once; more are closed at accept
MAX_HEAD = 8192  # bytes of request line and headers
PARENT_POLL = 0.5  # how often the metrics process checks that its master still runs
METRICS_PATH = "/metrics"


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
    from mailgate.master.metrics import events

    events.build_info()
    server = ScrapeServer(sock, parent)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
