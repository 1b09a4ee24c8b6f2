"""Shared fixtures: free ports, the real master in a subprocess, real backends and gateways.

The master runs as ``python -m mailgate.master`` in its own session (``start_new_session``), so
teardown can kill it and every worker with one ``killpg``, whatever a test left behind.

Session fixtures run the real backends once: ``dovecot`` (IMAP, POP3, SASL), ``postfix`` (SMTP
with XCLIENT and SASL through Dovecot), ``auth_server`` (an auth_http server routing the
``USERS`` to them; reset before every test that uses it) and ``tls_files`` (a trustme CA and a
server certificate for localhost/127.0.0.1).

``gateway`` runs the module's ``GATEWAY_CONFIG`` (the ``mail {}`` block, nginx syntax) on real
nginx and on mailgate: every test that uses it runs once per implementation, unless marked
``@pytest.mark.gateway(implementations=("mailgate",))`` with a comment saying why.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import nginx
from tests.servers.auth_http import Account, AuthServer, running_auth_server
from tests.servers.dovecot import DovecotInfo, running_dovecot
from tests.servers.postfix import PostfixInfo, running_postfix

MAILGATE = [sys.executable, "-m", "mailgate.master"]
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (zombies excluded), from ``/proc/*/stat``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def cmdline(pid: int) -> str:
    """The process title as ``ps`` shows it."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it exited since it was listed (an old worker during a reload)
        return ""
    return raw.replace(b"\0", b" ").decode().strip()


def config_text(
    *, port: int, pid: Path, log: Path, main: str = "", listen: str = "", workers: int = 2
) -> str:
    """A minimal foreground configuration with one plain IMAP server on ``port``."""
    return f"""\
daemon off;
worker_processes {workers};
error_log {log} info;
pid {pid};
{main}
events {{
    worker_connections 64;
}}
mail {{
    server {{
        listen 127.0.0.1:{port}{listen};
        protocol imap;
        proxy_pass 127.0.0.1:1;
    }}
}}
"""


@dataclass
class Master:
    """A running ``mailgate`` started by the ``mailgate`` fixture."""

    proc: subprocess.Popen[bytes]
    conf: Path
    pid_path: Path
    log_path: Path
    stderr_path: Path
    port: int

    @property
    def pid(self) -> int:
        return int(self.pid_path.read_text())

    def workers(self) -> list[int]:
        return children(self.pid)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def signal(self, signo: int) -> None:
        os.kill(self.pid, signo)

    def wait(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout)

    def wait_workers(self, count: int, timeout: float = 5.0) -> list[int]:
        assert wait_until(lambda: len(self.workers()) == count, timeout), self.log()
        return self.workers()

    def kill(self) -> None:
        """SIGKILL the master and every worker (they share the master's session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


def spawn_master(args: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    """``python -m mailgate.master ARGS`` in a session of its own, stderr into a file."""
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [*MAILGATE, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def _ready(master: Master, workers: int) -> bool:
    if master.proc.poll() is not None and not master.pid_path.exists():
        raise AssertionError(f"mailgate exited {master.proc.returncode}: {master.stderr()}")
    if not master.pid_path.exists() or not master.pid_path.read_text().strip():
        return False
    if len(master.workers()) < workers:
        return False
    try:
        socket.create_connection(("127.0.0.1", master.port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def mailgate(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    """Start the real master: ``mailgate(main=..., listen=..., workers=N, text=...)``.

    ``text`` replaces the whole configuration (use ``{port}``, ``{pid}``, ``{log}``);
    ``wait=False`` returns at once (for start-up failures and ``daemon on``);
    ``expect`` is the number of workers to wait for (default: ``workers``).
    """
    started: list[Master] = []

    def start(
        *,
        text: str | None = None,
        wait: bool = True,
        expect: int | None = None,
        args: tuple[str, ...] = (),
        **kwargs: object,
    ) -> Master:
        n = len(started)
        port = free_port()
        pid, log = tmp_path / f"mailgate{n}.pid", tmp_path / f"error{n}.log"
        conf, stderr = tmp_path / f"mailgate{n}.conf", tmp_path / f"stderr{n}.txt"
        if text is None:
            conf.write_text(config_text(port=port, pid=pid, log=log, **kwargs))  # type: ignore[arg-type]
        else:
            conf.write_text(text.format(port=port, pid=pid, log=log))
        proc = spawn_master(["-c", str(conf), *args], stderr)
        master = Master(proc, conf, pid, log, stderr, port)
        started.append(master)
        if wait:
            workers = int(str(kwargs.get("workers", 2))) if expect is None else expect
            assert wait_until(lambda: _ready(master, workers), START_TIMEOUT), master.log()
        return master

    yield start
    for master in started:
        master.kill()


# --- Real backends, started once per session ------------------------------------------------

USERS: Mapping[str, str] = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotInfo]:
    with running_dovecot(tmp_path_factory.mktemp("backends"), USERS) as info:
        yield info


@pytest.fixture(scope="session")
def postfix(
    tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotInfo
) -> Iterator[PostfixInfo]:
    with running_postfix(tmp_path_factory.mktemp("backends"), dovecot) as info:
        yield info


@pytest.fixture(scope="session")
def auth_server(dovecot: DovecotInfo, postfix: PostfixInfo) -> Iterator[AuthServer]:
    """An auth_http server that routes ``USERS`` to Dovecot (IMAP, POP3) and Postfix (SMTP)."""
    backends = {
        "imap": (dovecot.host, dovecot.imap_port),
        "pop3": (dovecot.host, dovecot.pop3_port),
        "smtp": (postfix.host, postfix.smtp_port),
    }
    accounts = {user: Account(password) for user, password in USERS.items()}
    with running_auth_server(backends, accounts) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_auth_server(request: pytest.FixtureRequest) -> None:
    """Each test starts with the auth server's initial table and no recorded requests."""
    if "auth_server" in request.fixturenames:
        server: AuthServer = request.getfixturevalue("auth_server")
        server.reset()


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate for localhost/127.0.0.1 and the CA file clients trust."""

    cert: Path
    key: Path
    ca: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    files = TlsFiles(folder / "server.crt", folder / "server.key", folder / "ca.crt")
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(files.cert), append=True)
    server.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


# --- Gateways: the same config on nginx and on mailgate ---------------------------------------

IMPLEMENTATIONS = ("nginx", "mailgate")
PLACEHOLDER = re.compile(r"%%(\w+)%%")
LISTEN_PORT = re.compile(r"listen\s+127\.0\.0\.1:%%PORT_(\w+)%%")
CONFIG_HEADER = f"""\
{nginx.LOAD_MAIL_MODULE}
worker_processes 2;
events {{
    worker_connections 512;
}}
"""
DEFAULT_WORKERS = 2
DEFAULT_CONNECTIONS = 512


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gateway(implementations): run a gateway test only on these implementations",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses ``gateway`` once per implementation (module-scoped)."""
    if "gateway" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("gateway")
    implementations = IMPLEMENTATIONS if marker is None else marker.kwargs["implementations"]
    metafunc.parametrize("gateway", implementations, indirect=True, scope="module")


@dataclass
class Gateway:
    """A running nginx or mailgate: its ports by name, CA file and error log."""

    implementation: str
    ports: dict[str, int]
    ca: Path
    error_log: Path
    conf: Path
    backends: dict[str, int] = field(default_factory=dict)

    def port(self, name: str) -> int:
        return self.ports[name]

    def tls(self) -> ssl.SSLContext:
        """A client context that trusts the gateway's certificate."""
        return ssl.create_default_context(cafile=str(self.ca))

    def connect(self, name: str, *, tls: bool = False) -> LineClient:
        """A line client on port ``name`` (implicit TLS with ``tls=True``)."""
        return LineClient(self.port(name), tls=self.tls() if tls else None)

    def log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> bool:
        return wait_until(lambda: text in self.log_text(), timeout)

    def worker_pids(self) -> list[int]:
        """The live worker processes (children of the master named in the pid file)."""
        return children(int((self.error_log.parent / "nginx.pid").read_text()))


def render_config(
    template: str,
    values: Mapping[str, str | int],
    workers: int = DEFAULT_WORKERS,
    connections: int = DEFAULT_CONNECTIONS,
) -> tuple[str, dict[str, int]]:
    """Fill ``%%NAME%%`` placeholders; each unknown ``%%PORT_x%%`` gets a free port."""
    ports: dict[str, int] = {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return str(values[name])
        if name.startswith("PORT_"):
            return str(ports.setdefault(name.removeprefix("PORT_"), free_port()))
        raise KeyError(f"unknown placeholder %%{name}%% in a gateway config")

    body = PLACEHOLDER.sub(fill, template)
    header = CONFIG_HEADER.replace(
        f"worker_processes {DEFAULT_WORKERS};", f"worker_processes {workers};"
    ).replace(f"worker_connections {DEFAULT_CONNECTIONS};", f"worker_connections {connections};")
    return header + body, ports


@contextlib.contextmanager
def running_gateway(
    implementation: str,
    template: str,
    folder: Path,
    values: Mapping[str, str | int],
    ca: Path,
    *,
    workers: int = DEFAULT_WORKERS,
    connections: int = DEFAULT_CONNECTIONS,
) -> Iterator[Gateway]:
    """Start ``implementation`` on the rendered template; stop it when the block exits.

    Both run the same file with the same ``-p``/``-c``/``-g`` command line; mailgate skips the
    ``load_module`` line with a warning. ``workers`` is the ``worker_processes`` count.
    """
    text, ports = render_config(template, values, workers, connections)
    conf = folder / "nginx.conf"
    conf.write_text(text)
    listening = [ports[name] for name in LISTEN_PORT.findall(template)]
    error_log, pid = folder / "error.log", folder / "nginx.pid"
    gateway = Gateway(implementation, ports, ca, error_log, conf)
    if implementation == "nginx":
        with nginx.running_nginx(folder, conf, listening):
            yield gateway
        return
    args = ["-p", str(folder), "-c", str(conf), "-g", nginx.global_directives(pid, error_log)]
    master = Master(
        spawn_master(args, folder / "stderr.txt"),
        conf,
        pid,
        error_log,
        folder / "stderr.txt",
        listening[0],
    )
    try:
        assert wait_until(
            lambda: _ready(master, workers) and all(nginx.accepts(p) for p in listening),
            START_TIMEOUT,
        ), f"mailgate did not start:\n{master.stderr()}\n{master.log()}"
        yield gateway
    finally:
        master.kill()


@pytest.fixture(scope="module")
def gateway_values() -> Mapping[str, str | int]:
    """Extra ``%%NAME%%`` placeholders for ``GATEWAY_CONFIG``; a module overrides this fixture
    to give the gateway, say, its own DNS server's address or a client CA file."""
    return {}


@pytest.fixture(scope="module")
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    auth_server: AuthServer,
    tls_files: TlsFiles,
    gateway_values: Mapping[str, str | int],
) -> Iterator[Gateway]:
    """The module's ``GATEWAY_CONFIG`` running on nginx or mailgate (the test's parameter).

    Placeholders: ``%%PORT_<name>%%`` (a free port; ``gateway.port("<name>")``), ``%%CERT%%``,
    ``%%KEY%%``, ``%%AUTH_HTTP%%`` (the auth server's URL), ``%%DOVECOT_IMAP%%``,
    ``%%DOVECOT_POP3%%``, ``%%POSTFIX_SMTP%%``, and whatever the module's ``gateway_values``
    fixture adds. A module-level ``GATEWAY_WORKERS = N`` sets ``worker_processes`` (default 2),
    ``GATEWAY_WORKER_CONNECTIONS = N`` sets ``worker_connections`` (default 512).
    """
    implementation: str = request.param
    if implementation == "nginx" and (why := nginx.missing()) is not None:
        # make test installs nginx: without it the wire comparison would silently shrink.
        pytest.fail(why)
    values: dict[str, str | int] = {
        "CERT": str(tls_files.cert),
        "KEY": str(tls_files.key),
        "AUTH_HTTP": auth_server.url,
        "DOVECOT_IMAP": auth_server.backends["imap"][1],
        "DOVECOT_POP3": auth_server.backends["pop3"][1],
        "POSTFIX_SMTP": auth_server.backends["smtp"][1],
        **gateway_values,
    }
    folder = tmp_path_factory.mktemp(implementation)
    template: str = request.module.GATEWAY_CONFIG
    workers: int = getattr(request.module, "GATEWAY_WORKERS", DEFAULT_WORKERS)
    connections: int = getattr(request.module, "GATEWAY_WORKER_CONNECTIONS", DEFAULT_CONNECTIONS)
    with running_gateway(
        implementation,
        template,
        folder,
        values,
        tls_files.ca,
        workers=workers,
        connections=connections,
    ) as started:
        yield started


# --- A line client for byte-exact replies -------------------------------------------------------


class LineClient:
    """A raw TCP (or TLS) client that sends bytes and reads CRLF-terminated lines."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 5.0):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock: socket.socket = sock
        if tls is not None:
            self.sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.buffer = b""

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self) -> bytes:
        """The next line with its CRLF (or what came before EOF)."""
        while b"\n" not in self.buffer:
            if not self._fill():
                data, self.buffer = self.buffer, b""
                return data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def lines_until(self, last: Callable[[bytes], bool]) -> bytes:
        """Lines up to and including the first for which ``last(line)`` holds."""
        data = b""
        while True:
            line = self.line()
            data += line
            if not line or last(line):
                return data

    def ask(self, command: bytes, last: Callable[[bytes], bool] | None = None) -> bytes:
        """Send ``command`` plus CRLF; return one reply line, or lines up to ``last``."""
        self.send(command + b"\r\n")
        return self.line() if last is None else self.lines_until(last)

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (all buffered data discarded)."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except (ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False
        return True

    def starttls(self, tls: ssl.SSLContext) -> None:
        assert not self.buffer, f"bytes after the STARTTLS reply: {self.buffer!r}"
        self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")


def make_message(subject: str, sender: str = "test@example.test") -> bytes:
    """A small RFC 5322 message with a unique ``subject`` to look for."""
    return f"From: {sender}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


def unique(prefix: str) -> str:
    """A subject or name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_curl(gateway: Gateway, url: str, *args: str) -> str:
    """``curl URL`` trusting the gateway's CA; fails the test on a non-zero exit."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(gateway.ca), *args, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_s_client(gateway: Gateway, protocol: str, port: str, commands: bytes) -> bytes:
    """``openssl s_client -starttls PROTOCOL``: what the server said after TLS began.

    ``commands`` are LF-separated lines (``-crlf`` sends them with CRLF); ``-ign_eof`` keeps the
    client reading until the server closes, so the last command should end the session.
    """
    argv = ["openssl", "s_client", "-starttls", protocol, "-connect", f"127.0.0.1:{port}"]
    argv += ["-CAfile", str(gateway.ca), "-verify_return_error", "-crlf", "-quiet", "-ign_eof"]
    result = subprocess.run(argv, input=commands, capture_output=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout
