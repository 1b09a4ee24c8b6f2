"""The ``mailgate`` command line, run as a subprocess, compared with nginx's wording."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.support.master import MAILGATE, Master, config_text
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILGATE, *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "mailgate.conf"
    path.write_text(
        config_text(port=free_port(), pid=tmp_path / "m.pid", log=tmp_path / "error.log")
    )
    return path


def test_v_prints_the_version() -> None:
    result = run("-v")
    assert (result.returncode, result.stderr) == (0, "mailgate version: mailgate/0.1.0\n")


def test_h_prints_usage() -> None:
    result = run("-h")
    assert result.returncode == 0
    assert "Usage: mailgate [-?hvVtTq]" in result.stderr
    assert "relative to the current directory" in result.stderr


def test_capital_v_reports_openssl_and_the_libssl_check() -> None:
    result = run("-V")
    assert result.returncode == 0
    assert "running with OpenSSL" in result.stderr
    assert "libssl check passed" in result.stderr
    assert "modules: mail mail_ssl" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-x",), 'invalid option: "x"'),
        (("config.conf",), 'invalid option: "config.conf"'),
        (("-s", "restart"), 'invalid option: "-s restart"'),
        (("-c",), 'option "-c" requires file name'),
        (("-p",), 'option "-p" requires directory name'),
    ],
)
def test_bad_command_line_is_refused(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert (result.returncode, result.stderr) == (1, f"mailgate: {message}\n")


def test_t_accepts_a_good_configuration(conf: Path) -> None:
    result = run("-t", "-c", str(conf))
    assert result.returncode == 0
    assert result.stderr == (
        f"mailgate: the configuration file {conf} syntax is ok\n"
        f"mailgate: configuration file {conf} test is successful\n"
    )


def test_t_with_glued_c_and_q_is_silent(conf: Path) -> None:
    result = run("-tq", f"-c{conf}")
    assert (result.returncode, result.stderr) == (0, "")


def test_t_rejects_a_bad_configuration(conf: Path) -> None:
    conf.write_text(conf.read_text() + "bogus_directive on;\n")
    result = run("-t", "-c", str(conf))
    assert result.returncode == 1
    first, last = result.stderr.splitlines()
    assert first.startswith('mailgate: [emerg] unknown directive "bogus_directive"')
    assert last == f"mailgate: configuration file {conf} test failed"


def test_capital_t_dumps_every_file(conf: Path) -> None:
    result = run("-T", "-c", str(conf))
    assert result.returncode == 0
    assert result.stdout == f"# configuration file {conf}:\n{conf.read_text()}\n"


def test_start_with_a_bad_configuration_exits_1(conf: Path) -> None:
    conf.write_text("bogus_directive on;\n")
    result = run("-c", str(conf))
    assert result.returncode == 1
    assert result.stderr.startswith('mailgate: [emerg] unknown directive "bogus_directive"')


def test_s_without_a_pid_file_fails_like_nginx(conf: Path, tmp_path: Path) -> None:
    result = run("-s", "reload", "-c", str(conf))
    assert result.returncode == 1
    pid = tmp_path / "m.pid"
    assert result.stderr == (
        f'mailgate: [error] open() "{pid}" failed (2: No such file or directory)\n'
    )


def test_s_with_an_empty_pid_file_fails_like_nginx(conf: Path, tmp_path: Path) -> None:
    pid = tmp_path / "m.pid"
    pid.write_text("")
    result = run("-s", "stop", "-c", str(conf))
    assert (result.returncode, result.stderr) == (
        1,
        f'mailgate: [error] invalid PID number "" in "{pid}"\n',
    )


def test_s_to_a_gone_process_fails_like_nginx(conf: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "m.pid").write_text(f"{dead.pid}\n")
    result = run("-s", "quit", "-c", str(conf))
    assert (result.returncode, result.stderr) == (
        1,
        f"mailgate: [alert] kill({dead.pid}, 3) failed (3: No such process)\n",
    )


def test_s_reload_replaces_the_workers(mailgate: type[Master]) -> None:
    master = mailgate()
    old = set(master.workers())
    assert run("-s", "reload", "-c", str(master.conf)).returncode == 0
    assert wait_until(lambda: len(master.workers()) == 2 and not old & set(master.workers()))


def test_s_reopen_reaches_the_master(mailgate: type[Master]) -> None:
    master = mailgate()
    assert run("-s", "reopen", "-c", str(master.conf)).returncode == 0
    assert wait_until(lambda: "signal 10 (SIGUSR1) received, reopening logs" in master.log())


@pytest.mark.parametrize(("action", "signo"), [("quit", signal.SIGQUIT), ("stop", signal.SIGTERM)])
def test_s_quit_and_stop_end_the_master(
    mailgate: type[Master], action: str, signo: signal.Signals
) -> None:
    master = mailgate()
    assert run("-s", action, "-c", str(master.conf)).returncode == 0
    assert master.wait() == 0
    assert f"signal {int(signo)} ({signo.name}) received" in master.log()


def test_seed_quick_start_configuration_passes_t(tmp_path: Path) -> None:
    """conf/seed-example.conf: the ngx_mail_ssl_module guide's quick start, unchanged."""
    seed = Path(__file__).resolve().parents[2] / "conf" / "seed-example.conf"
    conf = tmp_path / "seed-example.conf"
    conf.write_text(seed.read_text())
    demo = tmp_path / "demo"
    demo.mkdir()
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(demo / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(demo / "key.pem"))
    ca.cert_pem.write_to_path(str(demo / "ca.pem"))
    # It names no error_log: -e stands in for /var/log/mailgate, which `make install` creates.
    result = run("-t", "-e", str(tmp_path / "error.log"), "-c", str(conf))
    assert result.returncode == 0, result.stderr
    assert f"configuration file {conf} test is successful" in result.stderr


@pytest.mark.skipif(os.path.isdir("/var/log/mailgate"), reason="the default log folder exists")
def test_t_without_the_default_log_folder_fails_in_one_line(conf: Path) -> None:
    conf.write_text(re.sub(r"error_log [^;]*;", "", conf.read_text()))
    result = run("-t", "-c", str(conf))
    assert (result.returncode, result.stderr) == (
        1,
        'mailgate: [emerg] open() "/var/log/mailgate/error.log" failed '
        "(2: No such file or directory)\n"
        f"mailgate: configuration file {conf} test failed\n",
    )


def test_t_names_a_key_that_does_not_match_its_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.issue_cert("localhost").cert_chain_pems[0].write_to_path(str(cert))
    ca.issue_cert("other").private_key_pem.write_to_path(str(key))
    conf = tmp_path / "mailgate.conf"
    conf.write_text(
        "mail { server { listen 127.0.0.1:993 ssl; proxy_pass 127.0.0.1:143;\n"
        f"ssl_certificate {cert}; ssl_certificate_key {key}; }} }}\n"
    )
    result = run("-t", "-c", str(conf))
    assert result.returncode == 1
    assert f'SSL_CTX_use_PrivateKey("{key}") failed' in result.stderr
