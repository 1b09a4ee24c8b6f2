"""The servers under test and behind them: certificates, Dovecot, auth_http, nginx, mailgate.

nginx and mailgate run the **same** config file with the same command line
(``-p DIR -c DIR/gateway.conf -g "daemon off; master_process on; pid ...; error_log ..."``);
mailgate skips nginx's ``load_module`` line with a warning. Every server runs in a session of
its own, so a Ctrl-C in the terminal reaches only the harness, which then stops them in order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from tests.servers import dovecot
from tests.servers.files import log_tail

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
NGINX = Path("/usr/sbin/nginx")
MAIL_MODULE = Path("/usr/lib/nginx/modules/ngx_mail_module.so")
MAILGATE = [sys.executable, "-m", "mailgate.master"]
IMPLEMENTATIONS = ("nginx", "mailgate")
START_TIMEOUT = 20.0
SUBJECT = ("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")

SMALL_USER, BULK_USER, PASSWORD = "bench", "bulk", "bench-pw"
SMALL_MESSAGE = (
    b"From: bench@example.test\r\nTo: bench@example.test\r\nSubject: hello\r\n\r\n"
    + b"a short message for the sessions/s runs\r\n" * 20
)

# Dovecot's defaults start one imap process per session; reusing them keeps the backend from
# being what limits sessions/s (it is the same backend for both gateways, but a cheaper one
# makes the gateway's own cost visible).
DOVECOT_TUNING = """
service imap {
  service_count = 0
  process_min_avail = 8
  process_limit = 1024
}
"""


@dataclass(frozen=True)
class Ports:
    """Fixed loopback ports, so a port already taken fails the run up front and clearly."""

    base: int

    @property
    def imaps_ecdsa(self) -> int:
        return self.base + 1

    @property
    def imaps_rsa(self) -> int:
        return self.base + 2

    @property
    def imap_plain(self) -> int:
        return self.base + 3

    @property
    def dovecot_imap(self) -> int:
        return self.base + 11

    @property
    def dovecot_pop3(self) -> int:
        return self.base + 12

    @property
    def auth(self) -> int:
        return self.base + 21

    @property
    def gateway(self) -> tuple[int, ...]:
        return (self.imaps_ecdsa, self.imaps_rsa, self.imap_plain)

    @property
    def all(self) -> tuple[int, ...]:
        return (*self.gateway, self.dovecot_imap, self.dovecot_pop3, self.auth)


# Where the snapshot of mailgate's sources lives (see ``snapshot_mailgate``); None: run the
# installed (editable) package, which follows the working tree as it changes.
_snapshot: Path | None = None


def snapshot_mailgate(folder: Path) -> str:
    """Copy mailgate's four source folders so the whole run measures one version of the code.

    The editable install reads the working tree, which may change while a 10-minute run goes
    on; a namespace package on PYTHONPATH comes before the editable finder. Returns what was
    copied (commit, and whether the tree had uncommitted changes), for the report.
    """
    global _snapshot
    target = folder / "src" / "mailgate"
    for name in ("config", "shm", "worker", "master"):
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    _snapshot = folder / "src"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "config", "shm", "worker", "master")
    return f"mailgate {commit}" + (" + uncommitted changes" if dirty else "")


def mailgate_source() -> Path | None:
    """The copy of mailgate's sources the next gateway starts from (None: the install)."""
    return _snapshot


def run_mailgate_from(source: Path | None) -> None:
    """Start mailgate from this copy of its sources (a namespace package folder) from now on;
    None: from the editable install."""
    global _snapshot
    _snapshot = source


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip()


def _mailgate_env() -> dict[str, str] | None:
    if _snapshot is None:
        return None
    return {**os.environ, "PYTHONPATH": str(_snapshot)}


class PortTaken(RuntimeError):
    """A port the harness needs is in use."""


def check_ports_free(ports: tuple[int, ...]) -> None:
    """Bind each port once; name who holds a taken one (from ``ss``) in the error."""
    for port in ports:
        with socket.socket() as sock:
            # As the servers do: connections in TIME_WAIT from the previous gateway must not
            # count as taken, only a listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError as err:
                holder = subprocess.run(
                    ["ss", "-ltnpH", f"sport = :{port}"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip()
                raise PortTaken(
                    f"{LOOPBACK}:{port} is taken ({err.strerror}); held by: {holder or '?'}\n"
                    "stop that process or choose other ports with --base-port"
                ) from err


def accepts(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Certificates:
    ecdsa_cert: Path
    ecdsa_key: Path
    rsa_cert: Path
    rsa_key: Path


def make_certificates(folder: Path) -> Certificates:
    """A self-signed ECDSA P-256 and an RSA-2048 pair for localhost/127.0.0.1."""
    certs = Certificates(
        folder / "ecdsa.crt", folder / "ecdsa.key", folder / "rsa.crt", folder / "rsa.key"
    )
    pairs = [
        (
            ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            certs.ecdsa_cert,
            certs.ecdsa_key,
        ),
        (["-newkey", "rsa:2048"], certs.rsa_cert, certs.rsa_key),
    ]
    for key_args, cert, key in pairs:
        out = ["-keyout", str(key), "-out", str(cert)]
        subprocess.run(
            ["openssl", "req", "-x509", *key_args, "-nodes", "-days", "30", *SUBJECT, *out],
            check=True,
            capture_output=True,
        )
    return certs


@contextlib.contextmanager
def running_dovecot(folder: Path, ports: Ports, bulk_bytes: int) -> Iterator[None]:
    """Dovecot on loopback with two users: ``bench`` (one small message), ``bulk`` (one big)."""
    run = folder / "dovecot"
    run.mkdir(mode=0o755)
    users = {SMALL_USER: PASSWORD, BULK_USER: PASSWORD}
    info = dovecot.write_config(
        run, folder / "dovecot.log", users, ports.dovecot_imap, ports.dovecot_pop3
    )
    with info.config_path.open("a") as conf:
        conf.write(DOVECOT_TUNING)
    info.add_message(SMALL_USER, SMALL_MESSAGE)
    info.add_message(BULK_USER, bulk_message(bulk_bytes))
    with (folder / "dovecot.stderr").open("wb") as stderr:
        proc = procs.register(
            subprocess.Popen(
                ["/usr/sbin/dovecot", "-F", "-c", str(info.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        )
    try:
        dovecot.wait_until_ready(info, alive=lambda: proc.poll() is None)
        yield
    finally:
        procs.stop(proc)


def bulk_message(size: int) -> bytes:
    """A message of about ``size`` bytes: headers, then 78-byte lines (RFC 5322's soft limit)."""
    head = b"From: bench@example.test\r\nTo: bulk@example.test\r\nSubject: bulk\r\n\r\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


@contextlib.contextmanager
def running_auth_server(folder: Path, ports: Ports) -> Iterator[None]:
    """``bench/auth_server.py`` in its own process, routing both users to Dovecot."""
    argv = [sys.executable, "-m", "bench.auth_server", "--port", str(ports.auth)]
    argv += ["--backend", f"{LOOPBACK}:{ports.dovecot_imap}"]
    argv += ["--user", f"{SMALL_USER}:{PASSWORD}", "--user", f"{BULK_USER}:{PASSWORD}"]
    with (folder / "auth.stderr").open("wb") as stderr:
        proc = procs.register(
            subprocess.Popen(argv, cwd=ROOT, stderr=stderr, start_new_session=True)
        )
    try:
        _wait(lambda: accepts(ports.auth), proc, "auth server", folder / "auth.stderr")
        yield
    finally:
        procs.stop(proc)


def gateway_config(
    ports: Ports, certs: Certificates, worker_connections: int, fd_limit: int
) -> str:
    """The one file both gateways run: an ECDSA, an RSA and a plain IMAP server."""
    return f"""\
load_module {MAIL_MODULE};
worker_processes 2;
# The idle-connection runs hold up to 10,000 connections, all possibly on one worker; more
# than the inherited hard limit would only make both servers log a failed setrlimit().
worker_rlimit_nofile {min(worker_connections * 2 + 100, fd_limit)};
events {{
    worker_connections {worker_connections};
}}
mail {{
    server_name localhost;
    auth_http {LOOPBACK}:{ports.auth}/auth;
    # Idle connections must outlive the memory measurement (the default is 60 s).
    timeout 10m;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_timeout 10m;
    imap_auth plain login;

    # One certificate per server: openssl s_time has no -sigalgs, so under TLS 1.3 a server
    # holding both keys would always pick ECDSA; separate ports make the key type certain.
    server {{
        listen {LOOPBACK}:{ports.imaps_ecdsa} ssl;
        protocol imap;
        ssl_certificate {certs.ecdsa_cert};
        ssl_certificate_key {certs.ecdsa_key};
    }}
    server {{
        listen {LOOPBACK}:{ports.imaps_rsa} ssl;
        protocol imap;
        ssl_certificate {certs.rsa_cert};
        ssl_certificate_key {certs.rsa_key};
    }}
    server {{
        listen {LOOPBACK}:{ports.imap_plain};
        protocol imap;
    }}
}}
"""


def global_directives(folder: Path) -> str:
    # warn, not info: both servers log every connection at info, and the benchmark should not
    # measure log writing.
    return (
        f"daemon off; master_process on; pid {folder / 'gateway.pid'}; "
        f"error_log {folder / 'error.log'} warn;"
    )


def gateway_argv(implementation: str, folder: Path, conf: Path) -> list[str]:
    binary = [str(NGINX)] if implementation == "nginx" else MAILGATE
    return [*binary, "-p", str(folder), "-c", str(conf), "-g", global_directives(folder)]


def missing_nginx() -> str | None:
    for path in (NGINX, MAIL_MODULE):
        if not path.exists():
            return f"{path} is missing (apt-get install nginx-light libnginx-mod-mail)"
    return None


@contextlib.contextmanager
def running_gateway(
    implementation: str, folder: Path, conf_text: str, ports: Ports
) -> Iterator[procs.ServerProcs]:
    """Start nginx or mailgate on ``conf_text``; ready once 2 workers run and every port accepts."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "gateway.conf"
    conf.write_text(conf_text)
    check_ports_free(ports.gateway)
    stderr_path = folder / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = procs.register(
            subprocess.Popen(
                gateway_argv(implementation, folder, conf),
                cwd=ROOT,
                env=_mailgate_env() if implementation == "mailgate" else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        )
    server = procs.ServerProcs(proc.pid)
    try:
        _wait(
            lambda: len(server.workers()) >= 2 and all(accepts(p) for p in ports.gateway),
            proc,
            implementation,
            stderr_path,
            folder / "error.log",
        )
        yield server
    finally:
        procs.stop(proc)


def shared_cache_missing(folder: Path, conf_text: str) -> str | None:
    """Why mailgate's ``ssl_session_cache shared`` cannot be measured, or None if it can.

    Asked of mailgate itself (``-t`` on the bench config plus a shared cache), so the answer
    changes on its own the day the shared zone lands in ``shm/``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "shared-cache.conf"
    conf.write_text(
        conf_text.replace("mail {\n", "mail {\n    ssl_session_cache shared:SSL:10m;\n")
    )
    result = subprocess.run(
        [*MAILGATE, "-t", "-p", str(folder), "-c", str(conf)],
        cwd=ROOT,
        env=_mailgate_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    for line in result.stderr.splitlines():
        if "not implemented" in line:
            # '... [warn] <message> in <file>:<line>': the message is the reason.
            message = line.partition("] ")[2] or line
            return message.rpartition(" in /")[0] or message
    if result.returncode != 0:
        return f"mailgate -t refused the shared cache: {result.stderr.strip()}"
    return None


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], name: str, *logs: Path) -> None:
    """Poll ``ready()`` until it holds; fail at once with the logs if ``proc`` exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            details = "\n".join(log_tail(path) for path in logs)
            raise RuntimeError(f"{name} did not start (exit {proc.poll()}):\n{details}")
        time.sleep(0.05)
