"""``error_log`` inside a mail ``server {}``: several targets at once, each with its level.

One server has four error logs (a file at ``debug``, a file at ``info``, syslog at ``info``
to a receiver the test runs, ``stderr`` at ``info``); another has none of its own. As in
nginx (``ngx_set_connection_log``), a server's own logs REPLACE the main log for its
connections' messages, each target keeps the lines at its level and above, and the main log
keeps the other server's connections and the process messages. A HUP with a changed path
opens the new file and the new workers write there.

Every test runs on nginx and on mailgate, except the ``memory:`` refusal (see there).
Debian's nginx is built ``--with-debug``: its debug file also holds ``[debug]`` lines, which
mailgate does not write; what both must agree on is every line at ``info`` and above.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.servers.auth_http import AuthServer
from tests.servers.files import NOBODY_UID, reachable_dir
from tests.servers.ports import LOOPBACK
from tests.servers.syslog import SyslogReceiver
from tests.support.accounts import USERS
from tests.support.config import mail_block
from tests.support.gateway import IMPLEMENTATIONS, Gateway, running_gateway
from tests.support.master import MAILGATE
from tests.support.pki import TlsFiles
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow

GATEWAY_WORKERS = 1
# Relative paths: both resolve them against the prefix, the gateway's own folder.
GATEWAY_CONFIG = mail_block(
    servers="""
    server {
        listen 127.0.0.1:%%PORT_own%%;
        protocol imap;
        error_log server-debug.log debug;
        error_log server-info.log info;
        error_log syslog:server=127.0.0.1:%%SYSLOG%%,nohostname info;
        error_log stderr info;
    }
    server { listen 127.0.0.1:%%PORT_main%%; protocol imap; }
""",
)

IMAP_GREETING = b"* OK IMAP4 ready\r\n"
LAST_LINE = "proxied session done"  # the last info line of a LOGIN ... LOGOUT session
SESSION_DEADLINE = 10.0  # a login goes through the auth server and Dovecot: slow when loaded
# ``2026/12/08 05:40:00 [info] 1234#0: *1 client ...``: the level and what follows the stamp.
LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[(\w+)\] .*)$")
# ``<190>Dec  8 05:40:00 nginx: 2026/12/08 05:40:00 [info] ...`` (nohostname): the syslog
# header, then the whole error log line.
DATAGRAM = re.compile(r"^<\d+>\w{3} [ \d]\d \d\d:\d\d:\d\d \w+: (.*)$")


def syslog_lines(receiver: SyslogReceiver) -> list[str]:
    """The error log line each datagram carries, without its time stamp."""
    found = []
    for datagram in receiver.received():
        header = DATAGRAM.match(datagram.decode(errors="replace"))
        assert header is not None, datagram
        line = LOG_LINE.match(header.group(1))
        assert line is not None, datagram
        found.append(line.group(1))
    return found


@pytest.fixture(scope="module")
def gateway_values(syslog: SyslogReceiver) -> Mapping[str, str | int]:
    return {"SYSLOG": syslog.port}


def lines(path: Path) -> list[str]:
    """The error log lines of ``path`` (another process's output, such as a terminal
    banner, left out), without their time stamps: ``[info] 1234#0: *1 client ...``."""
    if not path.exists():
        return []
    found = (LOG_LINE.match(line) for line in path.read_text(errors="replace").splitlines())
    return [match.group(1) for match in found if match is not None]


def at_info_and_above(logged: list[str]) -> list[str]:
    return [line for line in logged if not line.startswith("[debug]")]


def log_in(gateway: Gateway, port: str) -> None:
    """A whole IMAP session through ``port``: greeting, LOGIN, LOGOUT, closed."""
    user = "alice"
    with gateway.connect(port) as client:
        assert client.line() == IMAP_GREETING
        client.ask(f"a LOGIN {user} {USERS[user]}".encode(), lambda line: line.startswith(b"a "))
        client.send(b"b LOGOUT\r\n")
        assert client.at_eof()


def session_lines(logged: list[str], port: int) -> list[str]:
    """The lines about connections to ``port`` (nginx's log context names the server)."""
    return [line for line in logged if f"127.0.0.1:{port}" in line]


def wait_for_session_end(path: Path, port: int) -> list[str]:
    """The lines about ``port`` once a session's last line (``proxied session done``) is in."""
    assert wait_until(
        lambda: any(LAST_LINE in line for line in session_lines(lines(path), port)),
        SESSION_DEADLINE,
    ), lines(path)[-10:]
    return session_lines(lines(path), port)


def test_each_server_target_gets_its_level_and_above(
    gateway: Gateway, syslog: SyslogReceiver
) -> None:
    folder = gateway.error_log.parent
    own = gateway.port("own")
    log_in(gateway, "own")
    info = wait_for_session_end(folder / "server-info.log", own)
    assert any("connected to" in line for line in info), info
    assert all(line.startswith(("[info]", "[notice]", "[warn]", "[error]")) for line in info), info
    debug_file = lines(folder / "server-debug.log")
    assert session_lines(at_info_and_above(debug_file), own) == info
    assert wait_until(lambda: session_lines(syslog_lines(syslog), own) == info), syslog.datagrams
    assert wait_until(lambda: session_lines(lines(folder / "stderr.txt"), own) == info)


def test_a_server_log_replaces_the_main_log_for_its_connections(gateway: Gateway) -> None:
    folder = gateway.error_log.parent
    log_in(gateway, "own")
    wait_for_session_end(folder / "server-info.log", gateway.port("own"))
    assert session_lines(lines(gateway.error_log), gateway.port("own")) == []


def test_a_server_without_its_own_log_uses_the_main_log(gateway: Gateway) -> None:
    folder = gateway.error_log.parent
    main = gateway.port("main")
    log_in(gateway, "main")
    assert any("connected to" in line for line in wait_for_session_end(gateway.error_log, main))
    for own in ("server-debug.log", "server-info.log", "stderr.txt"):
        assert session_lines(lines(folder / own), main) == []


def test_process_messages_stay_in_the_main_log(gateway: Gateway) -> None:
    folder = gateway.error_log.parent
    assert any("start worker process" in line for line in lines(gateway.error_log))
    for own in ("server-debug.log", "server-info.log"):
        assert not any("worker process" in line for line in lines(folder / own))


# Last in this module: it changes the module's gateway configuration.
def test_hup_opens_a_changed_server_log_and_the_new_workers_use_it(gateway: Gateway) -> None:
    folder = gateway.error_log.parent
    renamed = folder / "server-info-2.log"
    gateway.conf.write_text(gateway.conf.read_text().replace("server-info.log", renamed.name, 1))
    master = int((folder / "nginx.pid").read_text())
    old_workers = set(gateway.worker_pids())
    os.kill(master, signal.SIGHUP)
    assert wait_until(renamed.exists), sorted(p.name for p in folder.iterdir())
    assert wait_until(lambda: not old_workers & set(gateway.worker_pids()), 10.0)
    log_in(gateway, "own")
    assert any(
        "connected to" in line for line in wait_for_session_end(renamed, gateway.port("own"))
    )


ROTATED_CONFIG = mail_block(
    servers="""\
    server { listen 127.0.0.1:%%PORT_own%%; protocol imap; error_log own.log info; }
""",
)


# Not on the module's gateway: the workers (nobody) reopen the file by its path, so the
# folder must be one they can reach, which pytest's 0700 folders are not.
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_usr1_reopens_a_rotated_server_log_for_the_workers(
    implementation: str, tmp_path: Path, auth_server: AuthServer, tls_files: TlsFiles
) -> None:
    values = {"AUTH_HTTP": auth_server.url}
    with (
        reachable_dir(tmp_path, "run") as folder,
        running_gateway(
            implementation, ROTATED_CONFIG, folder, values, tls_files.ca, workers=1
        ) as gateway,
    ):
        own, rotated = folder / "own.log", folder / "own.log.1"
        (worker,) = gateway.worker_pids()
        own.rename(rotated)
        os.kill(int((folder / "nginx.pid").read_text()), signal.SIGUSR1)
        # The master reopens first, then tells the worker, which reopens before its next event.
        assert wait_until(
            lambda: any(
                f" {worker}#" in line and "reopening logs" in line
                for line in gateway.log_text().splitlines()
            )
        ), gateway.log_text()
        assert own.stat().st_uid == NOBODY_UID  # handed to the workers' user by the master
        log_in(gateway, "own")
        assert LAST_LINE in "".join(wait_for_session_end(own, gateway.port("own")))
        assert LAST_LINE not in rotated.read_text()


CROWDED_CONFIG = mail_block(
    servers="""\
    server { listen 127.0.0.1:%%PORT_own%%; protocol imap; error_log own.log info; }
""",
)
CROWDED_CONNECTIONS = 4


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_worker_connections_alert_goes_to_the_listener_s_server_log(
    implementation: str, tmp_path: Path, auth_server: AuthServer, tls_files: TlsFiles
) -> None:
    values = {"AUTH_HTTP": auth_server.url}
    alert = f"{CROWDED_CONNECTIONS} worker_connections are not enough"
    with (
        running_gateway(
            implementation,
            CROWDED_CONFIG,
            tmp_path,
            values,
            tls_files.ca,
            workers=1,
            connections=CROWDED_CONNECTIONS,
        ) as gateway,
        contextlib.ExitStack() as clients,
    ):
        own = tmp_path / "own.log"
        for _ in range(3 * CROWDED_CONNECTIONS):
            clients.enter_context(socket.create_connection((LOOPBACK, gateway.port("own"))))
        assert wait_until(lambda: any(alert in line for line in lines(own))), lines(own)
        assert alert not in gateway.log_text()


# mailgate only: Debian's nginx is built --with-debug, where ``memory:`` is a debug buffer;
# a build without debug support (and mailgate, which has none) refuses it with this line.
def test_memory_target_is_refused_by_the_test_option(tmp_path: Path) -> None:
    conf = tmp_path / "mailgate.conf"
    conf.write_text(
        f"error_log {tmp_path}/error.log;\n"
        "mail {\n"
        "    server {\n"
        "        listen 127.0.0.1:1;\n"
        "        protocol imap;\n"
        "        error_log memory:32m;\n"
        "    }\n"
        "}\n"
    )
    done = subprocess.run(
        [*MAILGATE, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        f"mailgate: [emerg] mailgate was built without debug support in {conf}:6"
    )
