"""A broken set-up stops ``mailgate`` with one clean line and exit code 1, never a traceback.

Each case is one mistake an admin makes (a missing folder, an unusable key, a port in use, a
user that does not exist), run as a real ``mailgate -c FILE`` in a subprocess: the terminal
must show exactly one ``mailgate: [emerg] ...`` line, in nginx's words. ``mailgate -t`` checks
what nginx's ``-t`` checks (the configuration, its files and logs, not ports or the pid file)
and ends with nginx's "test failed" line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.master import MAILGATE
from tests.support.pki import TlsFiles
from tests.support.processes import free_port

pytestmark = pytest.mark.slow

DEADLINE = 15.0  # a broken start that does not end by then has hung: the test fails
ENOENT = "(2: No such file or directory)"


@dataclass(frozen=True)
class Case:
    """One broken set-up: what to change in a good configuration, and the expected line."""

    name: str
    message: str  # the text after ``mailgate: [emerg] `` ({tmp}, {port}, {conf} filled in)
    test_fails: bool  # whether ``mailgate -t`` finds it too (nginx's -t opens files, binds nothing)
    error_log: str = "error_log {tmp}/error.log info;"
    pid: str = "pid {tmp}/m.pid;"
    main: str = ""
    server: str = ""
    args: tuple[str, ...] = ()
    conf: str = "{tmp}/mailgate.conf"  # the file given to -c


CASES = [
    Case(
        "error log folder missing",
        'open() "{tmp}/missing/error.log" failed ' + ENOENT,
        True,
        error_log="error_log {tmp}/missing/error.log;",
    ),
    Case(
        "error log is a folder",
        'open() "{tmp}" failed (21: Is a directory)',
        True,
        error_log="error_log {tmp};",
    ),
    Case(
        "early error log folder missing",
        'open() "{tmp}/missing/early.log" failed ' + ENOENT,
        True,
        args=("-e", "{tmp}/missing/early.log"),
    ),
    Case(
        "pid folder missing",
        'open() "{tmp}/missing/m.pid" failed ' + ENOENT,
        False,
        pid="pid {tmp}/missing/m.pid;",
    ),
    Case(
        "pid file is a folder",
        'open() "{tmp}" failed (21: Is a directory)',
        False,
        pid="pid {tmp};",
    ),
    Case(
        "configuration file missing",
        'open() "{tmp}/nothing.conf" failed ' + ENOENT,
        True,
        conf="{tmp}/nothing.conf",
    ),
    Case(
        "included file missing",
        'open() "{tmp}/extra.conf" failed ' + ENOENT + " in {tmp}/mailgate.conf:",
        True,
        main="include {tmp}/extra.conf;",
    ),
    Case(
        "certificate missing",
        'cannot load certificate "{tmp}/missing.pem"',
        True,
        server="starttls on; ssl_certificate {tmp}/missing.pem; ssl_certificate_key {key};",
    ),
    Case(
        "key is a folder",
        'cannot load certificate key "{tmp}"',
        True,
        server="starttls on; ssl_certificate {cert}; ssl_certificate_key {tmp};",
    ),
    Case(
        "key is not a key",
        'cannot load certificate key "{conf}"',
        True,
        server="starttls on; ssl_certificate {cert}; ssl_certificate_key {conf};",
    ),
    Case(
        "port in use",
        "bind() to 127.0.0.1:{busy} failed (98: Address already in use)",
        False,
        server="listen 127.0.0.1:{busy};",
    ),
    Case(
        "metrics port in use",
        "bind() to 127.0.0.1:{busy} failed (98: Address already in use) for metrics_listen",
        False,
        main="metrics_listen 127.0.0.1:{busy};",
    ),
    Case(
        "unix socket folder missing",
        "bind() to unix:{tmp}/missing/imap.sock failed " + ENOENT,
        False,
        server="listen unix:{tmp}/missing/imap.sock;",
    ),
    Case("unknown user", 'getpwnam("nosuchuser") failed', True, main="user nosuchuser;"),
    Case(
        "unknown group",
        'getgrnam("nosuchgroup") failed',
        True,
        main="user nobody nosuchgroup;",
    ),
    Case(
        "access log folder missing",
        'open() "{tmp}/missing/access.log" failed ' + ENOENT,
        True,
        server="access_log {tmp}/missing/access.log;",
    ),
]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def write_config(case: Case, tmp: Path, values: dict[str, object]) -> Path:
    def fill(text: str) -> str:
        return text.format(**values)

    text = f"""\
daemon off;
worker_processes 1;
{fill(case.error_log)}
{fill(case.pid)}
{fill(case.main)}
events {{ worker_connections 16; }}
mail {{
    server {{
        listen 127.0.0.1:{free_port()};
        protocol imap;
        proxy_pass 127.0.0.1:1;
        {fill(case.server)}
    }}
}}
"""
    conf = tmp / "mailgate.conf"
    conf.write_text(text)
    return conf


def run(args: list[str]) -> tuple[int | None, str]:
    """Run ``mailgate ARGS``; a run still going at the deadline is killed (returns None)."""
    with subprocess.Popen(
        [*MAILGATE, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            return None, stderr
    return proc.returncode, stderr


@pytest.fixture
def prepared(
    request: pytest.FixtureRequest, tmp_path: Path, busy_port: int, tls_files: TlsFiles
) -> tuple[Case, list[str], str]:
    case: Case = request.param
    values: dict[str, object] = {
        "tmp": tmp_path,
        "busy": busy_port,
        "cert": tls_files.cert,
        "key": tls_files.key,
        "conf": tmp_path / "mailgate.conf",
    }
    write_config(case, tmp_path, values)
    args = ["-c", case.conf.format(**values), *(arg.format(**values) for arg in case.args)]
    return case, args, case.message.format(**values)


@pytest.mark.parametrize("prepared", CASES, ids=[case.name for case in CASES], indirect=True)
def test_broken_start_says_one_line_and_exits_1(prepared: tuple[Case, list[str], str]) -> None:
    _case, args, message = prepared
    code, stderr = run(args)
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert (code, len(lines)) == (1, 1), stderr
    assert lines[0].startswith(f"mailgate: [emerg] {message}"), stderr


@pytest.mark.parametrize("prepared", CASES, ids=[case.name for case in CASES], indirect=True)
def test_t_finds_what_nginx_t_finds(prepared: tuple[Case, list[str], str]) -> None:
    case, args, message = prepared
    code, stderr = run(["-t", *args])
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    if not case.test_fails:
        assert code == 0, stderr
        return
    conf = args[1]
    assert code == 1, stderr
    assert lines[0].startswith(f"mailgate: [emerg] {message}"), stderr
    assert lines[1:] == [f"mailgate: configuration file {conf} test failed"], stderr
