"""Metrics, the scrape process and the access log, with real processes.

Three groups:

* the metrics modules alone: two worker-like processes write counters into one multiprocess
  directory, the real metrics process (``MetricsServer``) serves them, and the scrape is parsed
  with prometheus_client's parser and ``promtool check metrics`` (Debian's ``prometheus``);
* the real master and Dovecot, 2 workers, imaplib and curl over implicit TLS: counters equal
  what was done, summed over workers, still right after a HUP; access log lines; no password
  in any log. These run now: the test points the master at the metrics directory through the
  environment and scrapes the directory itself;
* the same traffic scraped over HTTP from the ``metrics_listen`` endpoint, the metrics
  process kept across HUP and respawned when killed.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import model
from mailgate.master.metrics import MetricsError
from mailgate.master.metrics import directory as metrics_directory
from mailgate.master.metrics import endpoint as metrics_endpoint
from mailgate.master.metrics import supervisor as metrics_supervisor
from tests.servers.dovecot import DovecotInfo
from tests.support.accounts import USERS
from tests.support.master import Master
from tests.support.metrics import Families, parse, reload, scrape_directory, total
from tests.support.pki import TlsFiles
from tests.support.processes import children, cmdline, free_port, wait_until

pytestmark = pytest.mark.slow


# -- helpers ----------------------------------------------------------------------------------


def http_get(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def alert(self, message: str) -> None:
        self.lines.append(message)

    def notice(self, message: str) -> None:
        self.lines.append(message)


# -- the metrics modules alone ------------------------------------------------------------------

WRITER = """
import sys
from mailgate.worker.observe import metrics
metrics.process_started()
n = int(sys.argv[1])
m = metrics.for_listener("127.0.0.1:1143", "imap")
for _ in range(n):
    m.accepted()
for _ in range(n - 1):
    m.closed("proxied")
m.handshake(True, "TLSv1.3", "full", 0.004)
m.handshake(True, "TLSv1.3", "ticket", 0.001)
m.handshake(False, "unknown", "unknown", None)
m.login("plain", "ok")
m.login("plain", "failed")
m.relayed(100, 200)
m.backend_connect_failed()
metrics.auth_http("ok", 0.01)
metrics.session_cache_lookup("SSL", True)
metrics.session_cache_lookup("SSL", False)
metrics.session_cache_store("SSL")
metrics.session_cache_evicted("SSL", 2)
metrics.session_cache_usage("SSL", n, 1000 * n)
metrics.ticket_key_rotated("SSL")
metrics.ticket_previous_key("SSL")
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def writer(directory: Path, count: int) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, metrics_directory.ENV: str(directory)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(count)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    """End a writer: it exits when its stdin closes."""
    assert proc.stdin is not None and proc.stdout is not None
    if not proc.stdin.closed:
        proc.stdin.close()
    proc.wait(5)
    proc.stdout.close()


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "metrics"
    path.mkdir(mode=0o700)
    monkeypatch.setenv(metrics_directory.ENV, str(path))
    return path


@pytest.fixture
def server() -> Iterator[Callable[[int], metrics_supervisor.MetricsServer]]:
    started: list[metrics_supervisor.MetricsServer] = []

    def start(port: int) -> metrics_supervisor.MetricsServer:
        srv = metrics_supervisor.MetricsServer(Log())
        srv.configure(listen(port))
        srv.start()
        started.append(srv)
        assert wait_until(lambda: http_get(port)[0] == 200, 10), srv.log.lines  # type: ignore[attr-defined]
        return srv

    yield start
    for srv in started:
        srv.stop()


def listen(port: int) -> model.MetricsListen:
    return model.MetricsListen(socket.AF_INET, "127.0.0.1", port, model.Source("t.conf", 1))


def test_scrape_sums_two_workers(metrics_dir: Path, server: Callable[..., Any]) -> None:
    port = free_port()
    srv = server(port)
    with writer(metrics_dir, 3) as first:
        with writer(metrics_dir, 5):
            status, text = http_get(port)
            assert status == 200
            fam = parse(text)
            listener = {"server": "127.0.0.1:1143", "protocol": "imap"}
            assert total(fam, "mailgate_connections_accepted_total", **listener) == 8
            assert total(fam, "mailgate_connections_active", **listener) == 2
            assert total(fam, "mailgate_sessions_total", reason="proxied") == 6
            assert total(fam, "mailgate_tls_handshakes_total", result="ok", kind="full") == 2
            assert total(fam, "mailgate_tls_handshakes_total", kind="ticket") == 2
            assert total(fam, "mailgate_tls_handshakes_total", result="failed") == 2
            assert total(fam, "mailgate_tls_handshake_duration_seconds_count") == 4
            assert total(fam, "mailgate_logins_total", outcome="ok", mechanism="plain") == 2
            assert total(fam, "mailgate_logins_total", outcome="failed") == 2
            assert total(fam, "mailgate_relayed_bytes_total", direction="to_client") == 400
            assert total(fam, "mailgate_backend_connect_failures_total") == 2
            assert total(fam, "mailgate_auth_http_requests_total", outcome="ok") == 2
            assert total(fam, "mailgate_auth_http_duration_seconds_count") == 2
            assert total(fam, "mailgate_ssl_session_cache_lookups_total", zone="SSL") == 4
            assert total(fam, "mailgate_ssl_session_cache_hits_total", zone="SSL") == 2
            assert total(fam, "mailgate_ssl_session_cache_misses_total", zone="SSL") == 2
            assert total(fam, "mailgate_ssl_session_cache_stores_total", zone="SSL") == 2
            assert total(fam, "mailgate_ssl_session_cache_evictions_total", zone="SSL") == 4
            # mostrecent: the latest reading of the one shared zone (the second writer's).
            assert total(fam, "mailgate_ssl_session_cache_entries", zone="SSL") == 5
            assert total(fam, "mailgate_ssl_session_cache_bytes", zone="SSL") == 5000
            assert total(fam, "mailgate_ssl_ticket_key_rotations_total") == 2
            assert total(fam, "mailgate_ssl_tickets_previous_key_total") == 2
            assert total(fam, "mailgate_worker_processes") == 2
            info = fam["mailgate_build_info"].samples
            assert len(info) == 1 and info[0].value == 1
            assert set(info[0].labels) == {"version", "python", "openssl"}
        stop(first)
        metrics_directory.mark_dead(first.pid)  # what the master's reap loop does
        fam = parse(http_get(port)[1])
        assert total(fam, "mailgate_connections_active") == 1  # the dead one's live gauge left
        assert total(fam, "mailgate_connections_accepted_total") == 8  # its counters stay
        assert total(fam, "mailgate_worker_processes") == 1
    assert cmdline(srv.pid) == metrics_endpoint.TITLE


def test_promtool_accepts_the_scrape(metrics_dir: Path, server: Callable[..., Any]) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "the Makefile installs Debian's prometheus for promtool"
    port = free_port()
    server(port)
    with writer(metrics_dir, 2):
        text = http_get(port)[1]
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_metrics_process_serves_only_metrics(metrics_dir: Path, server: Callable[..., Any]) -> None:
    port = free_port()
    server(port)
    assert http_get(port, "/")[0] == 404
    assert http_get(port, "/metrics?x=1")[0] == 200


def test_same_address_keeps_the_process_another_replaces_it(
    metrics_dir: Path, server: Callable[..., Any]
) -> None:
    port = free_port()
    srv = server(port)
    pid = srv.pid
    srv.configure(listen(port))  # a reload with the same metrics_listen
    assert srv.pid == pid
    other = free_port()
    srv.configure(listen(other))
    assert srv.pid not in (0, pid)
    assert wait_until(lambda: http_get(other)[0] == 200, 10)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_killed_metrics_process_is_respawned(
    metrics_dir: Path, server: Callable[..., Any]
) -> None:
    port = free_port()
    srv = server(port)
    time.sleep(metrics_supervisor.QUICK_DEATH)
    pid = srv.pid
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert srv.reaped(pid, status)
    assert srv.pid not in (0, pid)
    assert wait_until(lambda: http_get(port)[0] == 200, 10)


def test_a_bad_address_is_reported_like_nginx(metrics_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        srv = metrics_supervisor.MetricsServer(Log())
        with pytest.raises(MetricsError, match=rf"bind\(\) to 127.0.0.1:{port} failed \(98: "):
            srv.configure(listen(port))


ORPHAN = """
import sys, time
from mailgate.config import model
from mailgate.master.metrics import supervisor
class Log:
    def alert(self, m): pass
    def notice(self, m): pass
srv = supervisor.MetricsServer(Log())
srv.configure(model.MetricsListen(2, "127.0.0.1", int(sys.argv[1]), model.Source("t", 1)))
srv.start()
print(srv.pid, flush=True)
time.sleep(60)
"""


def test_the_metrics_process_exits_with_its_master(metrics_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert wait_until(lambda: http_get(port)[0] == 200, 10)
    proc.kill()
    proc.wait(5)
    proc.stdout.close()
    assert wait_until(lambda: not Path(f"/proc/{child}").exists(), 5)


# -- the metrics directory ----------------------------------------------------------------------


@pytest.fixture
def no_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_environment refuses to run once prometheus_client is imported; hide it."""
    monkeypatch.delitem(sys.modules, "prometheus_client", raising=False)


@pytest.fixture
def instance_dir(tmp_path: Path) -> Path:
    """A folder an admin chose for ``PROMETHEUS_MULTIPROC_DIR``."""
    path = tmp_path / "metrics"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``mkdtemp`` makes folders in this test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_metrics_off_creates_nothing_and_unsets_the_variable(
    private_tmp: Path, no_prometheus: None
) -> None:
    env = {metrics_directory.ENV: "/somewhere"}
    assert metrics_directory.prepare_environment(None, None, env) is None
    assert env == {}
    assert os.listdir(private_tmp) == []


def test_metrics_on_makes_a_fresh_private_folder_removed_at_stop(
    private_tmp: Path, no_prometheus: None
) -> None:
    env: dict[str, str] = {}
    path = metrics_directory.prepare_environment(listen(9), None, env)
    assert path is not None and env[metrics_directory.ENV] == path
    assert Path(path).parent == private_tmp
    info = os.stat(path)
    assert (info.st_uid, info.st_mode & 0o777) == (os.geteuid(), 0o700)
    metrics_directory.release_directory()
    assert os.listdir(private_tmp) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder away")
def test_the_folder_belongs_to_the_workers_user(private_tmp: Path, no_prometheus: None) -> None:
    path = metrics_directory.prepare_environment(listen(9), 65534, {})
    assert path is not None and os.stat(path).st_uid == 65534
    metrics_directory.release_directory()


def test_cold_start_wipes_the_admins_folder(instance_dir: Path, no_prometheus: None) -> None:
    env = {metrics_directory.ENV: str(instance_dir)}
    (instance_dir / "counter_4194303.db").write_bytes(b"x")  # a pid no process has
    assert metrics_directory.prepare_environment(listen(9), None, env) == str(instance_dir)
    assert os.listdir(instance_dir) == []
    metrics_directory.release_directory()
    assert instance_dir.is_dir()  # the admin's: kept


def test_upgrade_keeps_the_directory(instance_dir: Path, no_prometheus: None) -> None:
    (instance_dir / "counter_4194303.db").write_bytes(b"x")
    env = {metrics_directory.UPGRADE_ENV: "3;4;", metrics_directory.ENV: str(instance_dir)}
    metrics_directory.prepare_environment(listen(9), None, env)
    assert os.listdir(instance_dir) == ["counter_4194303.db"]


def test_a_running_instance_keeps_its_directory(instance_dir: Path, no_prometheus: None) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "mailgate"])
    try:
        assert wait_until(lambda: "mailgate" in cmdline(sleeper.pid))  # exec'd
        (instance_dir / f"counter_{sleeper.pid}.db").write_bytes(b"x")
        env = {metrics_directory.ENV: str(instance_dir)}
        metrics_directory.prepare_environment(listen(9), None, env)
        assert os.listdir(instance_dir) == [f"counter_{sleeper.pid}.db"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_folder_others_can_write_is_refused(instance_dir: Path, no_prometheus: None) -> None:
    instance_dir.chmod(0o777)
    with pytest.raises(MetricsError, match="is not a private folder"):
        metrics_directory.prepare_environment(
            listen(9), None, {metrics_directory.ENV: str(instance_dir)}
        )


def test_prepare_refuses_after_prometheus_client_was_imported() -> None:
    import prometheus_client  # noqa: F401

    with pytest.raises(MetricsError, match="imported before"):
        metrics_directory.prepare_environment(listen(9), None, {})


def test_the_command_line_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, mailgate.master.cli, mailgate.master.boot, mailgate.worker.session.session; "
        "assert 'prometheus_client' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the real master, Dovecot, 2 workers -----------------------------------------------------------

CONFIG = """\
daemon off;
worker_processes 2;
error_log {log} debug;
pid {pid};
@METRICS@
events {{
    worker_connections 64;
}}
mail {{
    ssl_certificate @CERT@;
    ssl_certificate_key @KEY@;
    access_log @DIR@/access.log;
    access_log @DIR@/access.json json;
    server {{
        listen 127.0.0.1:{port} ssl;
        protocol imap;
        proxy_pass @BACKEND@;
    }}
}}
"""
WRONG = "wrong-pw-Zq9"
SECRETS = (
    *USERS.values(),
    WRONG,
    base64.b64encode(b"\0bob\0" + USERS["bob"].encode()).decode(),
    base64.b64encode(b"\0carol\0" + USERS["carol"].encode()).decode(),
)


class ResumingIMAP(imaplib.IMAP4_SSL):
    """imaplib over TLS, offering ``session`` for resumption."""

    def __init__(self, port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> None:
        self._session = session
        super().__init__("127.0.0.1", port, ssl_context=ctx, timeout=5)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = imaplib.IMAP4._create_socket(self, timeout)  # type: ignore[attr-defined]
        return self.ssl_context.wrap_socket(  # type: ignore[no-any-return]
            sock, server_hostname="localhost", session=self._session
        )


class Traffic:
    """Sessions run against the gateway and what the metrics must say about them."""

    def __init__(self, port: int, ca: Path) -> None:
        self.port = port
        self.ca = ca
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.session: ssl.SSLSession | None = None
        self.connections = 0
        self.resumed = 0
        self.logins_ok = 0
        self.logins_failed = 0
        self.login_names: list[str] = []

    def _open(self) -> ResumingIMAP:
        imap = ResumingIMAP(self.port, self.ctx, self.session)
        self.connections += 1
        self.resumed += int(imap.sock.session_reused)  # type: ignore[attr-defined]
        return imap

    def login(self, user: str) -> None:
        imap = self._open()
        imap.login(user, USERS[user])
        imap.select("INBOX")
        self.session = imap.sock.session  # type: ignore[attr-defined]  # the newest ticket
        imap.logout()
        self.logins_ok += 1
        self.login_names.append(user)

    def authenticate(self, user: str) -> None:
        imap = self._open()
        imap.authenticate("PLAIN", lambda _: f"\0{user}\0{USERS[user]}".encode())
        imap.logout()
        self.logins_ok += 1
        self.login_names.append(user)

    def wrong_password(self, user: str) -> None:
        imap = self._open()
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(user, WRONG)
        with contextlib.suppress(Exception):
            imap.logout()
        with contextlib.suppress(Exception):
            imap.shutdown()
        self.logins_failed += 1
        self.login_names.append(user)

    def curl(self, user: str) -> None:
        done = subprocess.run(
            [
                "curl", "-sS", "--max-time", "10", "--cacert", str(self.ca),
                "--user", f"{user}:{USERS[user]}", f"imaps://localhost:{self.port}/",
                "--resolve", f"localhost:{self.port}:127.0.0.1",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "INBOX" in done.stdout
        self.connections += 1
        self.logins_ok += 1
        self.login_names.append(user)


def run_traffic(traffic: Traffic) -> None:
    traffic.login("alice")  # a full handshake
    for _ in range(3):
        traffic.login("alice")  # resumed with the newest ticket, on either worker
    traffic.authenticate("bob")
    traffic.wrong_password("carol")
    traffic.curl("carol")


def check_counters(fam: Families, traffic: Traffic, base: Families) -> None:
    """The scrape ``fam`` minus ``base`` (taken before the traffic) is exactly the traffic."""

    def delta(sample: str, **labels: str) -> float:
        return total(fam, sample, **labels) - total(base, sample, **labels)

    conns, resumed = traffic.connections, traffic.resumed
    assert delta("mailgate_connections_accepted_total", protocol="imap") == conns
    assert total(fam, "mailgate_connections_active") == 0
    assert delta("mailgate_sessions_total") == conns
    assert delta("mailgate_sessions_total", reason="backend_failed") == traffic.logins_failed
    assert delta("mailgate_sessions_total", reason="proxied") == traffic.logins_ok
    assert delta("mailgate_tls_handshakes_total", result="ok") == conns
    assert delta("mailgate_tls_handshakes_total", result="failed") == 0
    assert delta("mailgate_tls_handshakes_total", result="ok", kind="ticket") == resumed > 0
    assert delta("mailgate_tls_handshakes_total", kind="full") == conns - resumed
    assert delta("mailgate_tls_handshake_duration_seconds_count") == conns
    assert delta("mailgate_logins_total", outcome="ok") == traffic.logins_ok
    assert delta("mailgate_logins_total", outcome="failed") == traffic.logins_failed
    attempts = traffic.logins_ok + traffic.logins_failed
    assert delta("mailgate_logins_total", mechanism="plain") == attempts
    assert delta("mailgate_relayed_bytes_total", direction="to_client") > 0
    assert delta("mailgate_relayed_bytes_total", direction="to_backend") > 0


@pytest.fixture
def gateway_master(
    mailgate: Callable[..., Master],
    tmp_path: Path,
    tls_files: TlsFiles,
    dovecot: DovecotInfo,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Master, Path, int]]:
    """The real master on CONFIG; yields it, its metrics directory and its metrics port."""
    metrics_port = free_port()
    text = (
        CONFIG.replace("@CERT@", str(tls_files.cert))
        .replace("@KEY@", str(tls_files.key))
        .replace("@DIR@", str(tmp_path))
        .replace("@BACKEND@", f"{dovecot.host}:{dovecot.imap_port}")
        .replace("@METRICS@", f"metrics_listen 127.0.0.1:{metrics_port};")
    )
    # A folder of the admin's choice (PROMETHEUS_MULTIPROC_DIR in the master's environment),
    # so the test can read the counters there too.
    path = tmp_path / "metrics"
    path.mkdir(mode=0o700, exist_ok=True)
    monkeypatch.setenv(metrics_directory.ENV, str(path))
    try:
        master = mailgate(text=text, expect=2)
        yield master, path, metrics_port
    finally:
        shutil.rmtree(path, ignore_errors=True)


def settled(scrape: Callable[[], str]) -> Families:
    """A scrape taken once every accepted session has been counted as closed (the fixture's
    readiness probes included), and that the next scrape repeats: a scrape reads each
    process's counter and histogram files one after the other, so one taken during a worker's
    flush can see a session's close without its handshake time."""
    fam: Families = {}
    previous: Families | None = None

    def done() -> bool:
        nonlocal fam, previous
        fam = parse(scrape())
        accepted = total(fam, "mailgate_connections_accepted_total")
        closed = accepted > 0 and total(fam, "mailgate_sessions_total") == accepted
        stable, previous = fam == previous, fam
        return closed and stable

    assert wait_until(done, 10), fam.get("mailgate_sessions")
    return fam


def test_counters_match_the_traffic_across_workers_and_a_reload(
    gateway_master: tuple[Master, Path, int], tls_files: TlsFiles
) -> None:
    master, path, _ = gateway_master
    scrape = lambda: scrape_directory(path)  # noqa: E731
    base = settled(scrape)
    traffic = Traffic(master.port, tls_files.ca)
    run_traffic(traffic)
    check_counters(settled(scrape), traffic, base)
    reload(master)
    traffic.session = None  # the new generation has ticket keys of its own
    run_traffic(traffic)
    check_counters(settled(scrape), traffic, base)
    folder = Path(master.conf).parent
    check_access_log(master, folder, traffic)
    check_no_password(folder)


def check_access_log(master: Master, folder: Path, traffic: Traffic) -> None:
    # The fixture's readiness probes connect without TLS: leave their lines out.
    lines = [x for x in (folder / "access.log").read_text().splitlines() if " tls=- " not in x]
    records = [json.loads(x) for x in (folder / "access.json").read_text().splitlines()]
    records = [r for r in records if r["tls_version"] is not None]
    assert len(lines) == len(records) == traffic.connections
    backend = re.escape(f"upstream={records[0]['upstream']}")
    for line, record in zip(lines, records, strict=True):
        assert re.search(r" client=127\.0\.0\.1:\d+ ", line), line
        assert f" server=127.0.0.1:{master.port} protocol=imap tls=TLSv1.3 " in line
        assert re.search(r" handshake=\d+\.\d{3} ", line) and " cipher=TLS_" in line
        assert record["client_addr"] == "127.0.0.1" and record["tls_version"] == "TLSv1.3"
        assert record["sni"] == "localhost"
        assert record["bytes_in"] > 0 and record["bytes_out"] > 0
        assert f"reason={record['reason']}" in line
    assert [r["login"] for r in records] == traffic.login_names
    assert sum(r["resumed"] == "ticket" for r in records) == traffic.resumed
    assert sum(r["resumed"] == "no" for r in records) == traffic.connections - traffic.resumed
    assert [r["auth"] for r in records].count("failed") == traffic.logins_failed
    assert [r["auth"] for r in records].count("ok") == traffic.logins_ok
    ok_lines = [line for line in lines if " auth=ok " in line]
    assert all(re.search(backend, line) and line.endswith("reason=proxied") for line in ok_lines)
    assert sum("reason=backend_failed" in line for line in lines) == traffic.logins_failed


def check_no_password(folder: Path) -> None:
    texts = {
        p.name: p.read_text(errors="replace")
        for p in folder.iterdir()
        if p.is_file() and p.suffix in (".log", ".json", ".txt")
    }
    assert {"access.log", "access.json", "error0.log", "stderr0.txt"} <= set(texts)
    assert "client logged in" in texts["error0.log"]
    for name, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in {name}"


# -- NEEDS THE MASTER HOOKS: the HTTP endpoint of the real master -------------------------------


def test_endpoint_serves_the_counters_and_survives_a_reload(
    gateway_master: tuple[Master, Path, int], tls_files: TlsFiles
) -> None:
    master, _, metrics_port = gateway_master
    assert wait_until(lambda: http_get(metrics_port)[0] == 200, 10), master.log()
    (metrics_pid,) = [p for p in children(master.pid) if "metrics" in cmdline(p)]
    assert cmdline(metrics_pid) == metrics_endpoint.TITLE
    scrape = lambda: http_get(metrics_port)[1]  # noqa: E731
    base = settled(scrape)
    traffic = Traffic(master.port, tls_files.ca)
    run_traffic(traffic)
    check_counters(settled(scrape), traffic, base)
    reload(master)
    assert metrics_pid in children(master.pid)  # same address: the same process
    fam = settled(scrape)
    check_counters(fam, traffic, base)
    assert total(fam, "mailgate_reloads_total", result="ok") == 1
    assert total(fam, "mailgate_worker_processes") == 2  # the old workers were marked dead
    os.kill(metrics_pid, signal.SIGKILL)
    assert wait_until(lambda: http_get(metrics_port)[0] == 200, 10), master.log()
