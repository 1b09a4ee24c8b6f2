"""Helpers for the lifecycle tests: a gateway to signal, traffic that counts failures, sessions.

``gate`` starts mailgate in front of the session's Dovecot with a plain IMAP and an IMAPS
listener (``Gate.rewrite()`` changes its configuration for a reload).

``Traffic`` runs client threads in a loop (plain connect + greeting, TLS handshake + greeting,
IMAP LOGIN + SELECT + FETCH + LOGOUT through the gateway to Dovecot) while a test signals the
master; every refused connect, early EOF or wrong reply is recorded. The lifecycle promise is
that the count stays 0 across reload, upgrade and rollback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.dovecot import DovecotInfo
from tests.support.clients import LineClient
from tests.support.master import Master
from tests.support.pki import TlsFiles
from tests.support.processes import free_port, wait_until

GREETING = b"* OK IMAP4 ready\r\n"
USER, PASSWORD = "carol", "carol-pw"


def tagged(tag: bytes) -> Callable[[bytes], bool]:
    return lambda line: line.startswith(tag + b" ")


class ImapSession:
    """One IMAP client session through the gateway, logged in to Dovecot as ``USER``."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.client = LineClient(port, tls=tls, timeout=10)
        self._tag = 0
        greeting = self.client.line()
        assert greeting == GREETING, greeting

    def ask(self, command: bytes) -> bytes:
        """Send a tagged command; the reply lines up to the tagged one, which must be OK."""
        self._tag += 1
        tag = b"t%d" % self._tag
        reply = self.client.ask(tag + b" " + command, tagged(tag))
        last = reply.splitlines()[-1] if reply else b""
        if not last.startswith(tag + b" OK"):
            raise AssertionError(f"{command!r} answered {reply!r}")
        return reply

    def login(self) -> ImapSession:
        self.ask(f"LOGIN {USER} {PASSWORD}".encode())
        self.ask(b"SELECT INBOX")
        return self

    def fetch(self) -> bytes:
        return self.ask(b"FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")

    def logout(self) -> None:
        self.ask(b"LOGOUT")
        self.client.close()

    def close(self) -> None:
        self.client.close()


def greet(port: int, tls: ssl.SSLContext | None = None) -> None:
    """Connect (and handshake), read the greeting, hang up."""
    with LineClient(port, tls=tls, timeout=10) as client:
        line = client.line()
        assert line == GREETING, line


def imap_round(port: int) -> None:
    """A whole short session: LOGIN, SELECT, FETCH, LOGOUT."""
    session = ImapSession(port).login()
    try:
        session.fetch()
        session.logout()
    finally:
        session.close()


@dataclass
class Traffic:
    """Client threads looping over ``jobs`` until stopped; failures are kept, not raised."""

    jobs: dict[str, Callable[[], None]]
    done: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self, name: str, job: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                job()
            except Exception as err:  # every kind of failure counts, none may escape
                with self._lock:
                    self.failures.append(f"{name}: {err!r}")
                time.sleep(0.01)
            else:
                with self._lock:
                    self.done[name] = self.done.get(name, 0) + 1

    def __enter__(self) -> Traffic:
        for name, job in self.jobs.items():
            thread = threading.Thread(target=self._loop, args=(name, job), daemon=True)
            self._threads.append(thread)
            thread.start()
        assert wait_until(lambda: all(self.done.get(name) for name in self.jobs), 10), self.failures
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def rounds(self) -> int:
        with self._lock:
            return sum(self.done.values())

    def keep_going(self, rounds: int = 20) -> None:
        """Wait until ``rounds`` more client rounds have completed (the steps overlap them)."""
        target = self.rounds() + rounds
        assert wait_until(lambda: self.rounds() >= target, 20), self.failures


def render(
    *,
    port: int | str,
    pid: Path | str,
    log: Path | str,
    dovecot_port: int,
    tls: TlsFiles,
    tls_port: int,
    main: str = "",
    servers: str = "",
    listen: str = "",
    workers: int = 2,
) -> str:
    """A configuration: plain IMAP on ``port`` and IMAPS on ``tls_port``, both to Dovecot."""
    return f"""\
daemon off;
worker_processes {workers};
error_log {log} info;
pid {pid};
{main}
events {{
    worker_connections 256;
}}
mail {{
    proxy_pass 127.0.0.1:{dovecot_port};
    ssl_certificate {tls.cert};
    ssl_certificate_key {tls.key};
    server {{
        listen 127.0.0.1:{port}{listen};
        protocol imap;
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        protocol imap;
    }}
{servers}
}}
"""


def for_fixture(text: str) -> str:
    """``text`` for the ``mailgate(text=...)`` fixture: braces doubled, placeholders put back."""
    escaped = text.replace("{", "{{").replace("}", "}}")
    for name in ("port", "pid", "log"):
        escaped = escaped.replace(f"@{name}@", "{" + name + "}")
    return escaped


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an orphan's zombie may wait for a lazy init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a new master runs in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def reaping(master: Master) -> Iterator[list[int]]:
    """Yields a list to put new-master pids in; they are killed with their workers at exit."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            kill_group(pid)
        master.kill()


@dataclass
class Gate:
    """A running mailgate in front of Dovecot, and how to rewrite its configuration."""

    master: Master
    tls_port: int
    dovecot: DovecotInfo
    tls_files: TlsFiles

    def config(self, **changes: object) -> str:
        return render(
            port=self.master.port,
            pid=self.master.pid_path,
            log=self.master.log_path,
            dovecot_port=self.dovecot.imap_port,
            tls=self.tls_files,
            tls_port=self.tls_port,
            **changes,  # type: ignore[arg-type]
        )

    def rewrite(self, **changes: object) -> None:
        self.master.conf.write_text(self.config(**changes))

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls_files.ca))

    def traffic(self) -> Traffic:
        port, tls = self.master.port, self.tls()
        return Traffic(
            {
                "connect": lambda: greet(port),
                "tls": lambda: greet(self.tls_port, tls),
                "imap": lambda: imap_round(port),
            }
        )

    def reloaded(self, count: int = 2) -> set[int]:
        """HUP, then wait for ``count`` workers that were not there before; returns them."""
        before = set(self.master.workers())
        self.master.signal(signal.SIGHUP)
        assert wait_until(lambda: len(set(self.master.workers()) - before) == count), (
            self.master.log()
        )
        return set(self.master.workers()) - before


@pytest.fixture
def gate(
    mailgate: Callable[..., Master], dovecot: DovecotInfo, tls_files: TlsFiles
) -> Iterator[Callable[..., Gate]]:
    def start(workers: int = 2, tls: TlsFiles | None = None, **changes: object) -> Gate:
        tls_port = free_port()
        files = tls or tls_files
        text = render(
            port="@port@",
            pid="@pid@",
            log="@log@",
            dovecot_port=dovecot.imap_port,
            tls=files,
            tls_port=tls_port,
            workers=workers,
            **changes,  # type: ignore[arg-type]
        )
        master = mailgate(text=for_fixture(text), workers=workers)
        dovecot.add_message(USER, b"Subject: lifecycle\r\n\r\nhello\r\n")
        return Gate(master, tls_port, dovecot, files)

    yield start
