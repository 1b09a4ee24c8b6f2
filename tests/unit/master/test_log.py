"""The error log: nginx's line format, thresholds, reopen."""

from __future__ import annotations

import gc
import os
import re
from pathlib import Path

import pytest

from mailgate.config import loader, model
from mailgate.master.log import (
    ErrorLog,
    Level,
    LogOpenError,
    ServerLogs,
    console_line,
    format_line,
)


def test_line_has_nginx_format() -> None:
    line = format_line(0.0, Level.NOTICE, 1234, "start worker process 7")
    assert re.fullmatch(
        r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[notice\] 1234#0: start worker process 7\n", line
    )


def test_newlines_in_a_message_cannot_forge_a_line() -> None:
    assert format_line(0.0, Level.ERROR, 1, "a\nb").count("\n") == 1


def test_console_line_is_prefixed_like_nginx() -> None:
    assert console_line(Level.EMERG, "boom") == "mailgate: [emerg] boom\n"


def test_target_threshold_filters_levels(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    log = ErrorLog([(str(path), Level.WARN)])
    log.console = False
    log.notice("quiet")
    log.error("loud")
    assert "quiet" not in path.read_text()
    assert f"[error] {os.getpid()}#0: loud" in path.read_text()


def test_reopen_creates_a_rotated_file_again(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    log = ErrorLog([(str(path), Level.INFO)])
    log.console = False
    path.rename(tmp_path / "error.log.1")
    log.reopen()
    log.info("after")
    assert "after" in path.read_text()


def test_startup_warnings_are_echoed_to_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = ErrorLog([(str(tmp_path / "e.log"), Level.INFO)])
    log.warn("careful")
    log.notice("fine")
    assert capfd.readouterr().err == "mailgate: [warn] careful\n"


def test_enabled_says_whether_a_level_would_be_written(tmp_path: Path) -> None:
    log = ErrorLog([(str(tmp_path / "a.log"), Level.WARN), (str(tmp_path / "b.log"), Level.ERROR)])
    try:
        assert log.enabled(Level.ERROR) and log.enabled(Level.WARN)
        assert not log.enabled(Level.NOTICE) and not log.enabled(Level.INFO)
        log.info("dropped")
        assert (tmp_path / "a.log").read_text() == ""
    finally:
        log.close()
    verbose = ErrorLog([(str(tmp_path / "c.log"), Level.INFO)])
    try:
        assert verbose.enabled(Level.INFO) and not verbose.enabled(Level.DEBUG)
    finally:
        verbose.close()


def test_a_log_that_cannot_be_opened_is_one_nginx_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "error.log"
    with pytest.raises(LogOpenError) as caught:
        ErrorLog([(str(missing), Level.INFO)])
    assert str(caught.value) == f'open() "{missing}" failed (2: No such file or directory)'


def test_a_reload_whose_log_cannot_be_opened_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    log = ErrorLog([(str(path), Level.INFO)])
    log.console = False
    with pytest.raises(LogOpenError):
        log.successor([model.LogTarget(str(tmp_path / "missing" / "e.log"), "info")])
    log.info("still here")
    assert "still here" in path.read_text()


def test_reopen_with_an_owner_hands_the_file_to_it(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    log = ErrorLog([(str(path), Level.INFO)])
    path.rename(tmp_path / "error.log.1")
    path.touch(mode=0o040)  # as logrotate's "create" may leave it: the owner cannot write
    log.reopen(owner=os.getuid())
    assert path.stat().st_mode & 0o600 == 0o600
    log.close()


# -- the servers' own error logs ---------------------------------------------------------------


def servers(tmp_path: Path, *blocks: str, mail_level: str = "") -> list[model.ServerConfig]:
    """The servers of a configuration with one IMAP ``server {}`` per block of directives."""
    body = "".join(
        f"server {{ listen 127.0.0.1:{1143 + n}; protocol imap; {block} }}\n"
        for n, block in enumerate(blocks)
    )
    conf = tmp_path / "mailgate.conf"
    conf.write_text(f"mail {{ auth_http 127.0.0.1:9000; {mail_level}\n{body}}}\n")
    return list(loader.load(str(conf)).servers)


def test_each_server_target_keeps_its_level_and_above(tmp_path: Path) -> None:
    logs = ServerLogs(servers(tmp_path, "error_log debug.log debug; error_log warn.log warn;"))
    log = logs.by_index[0]
    log.debug("details")
    log.info("connected")
    log.warn("odd")
    logs.close()
    assert [
        line.split("#0: ")[1] for line in (tmp_path / "debug.log").read_text().splitlines()
    ] == [
        "details",
        "connected",
        "odd",
    ]
    assert (tmp_path / "warn.log").read_text().endswith("#0: odd\n")


def test_servers_with_the_mail_level_s_log_share_it_and_others_have_none(tmp_path: Path) -> None:
    found = servers(tmp_path, "", "", "error_log own.log;", mail_level="error_log mail.log;")
    (tmp_path / "other").mkdir()
    found += servers(tmp_path / "other", "")  # no error_log anywhere: the main log
    logs = ServerLogs(found)
    try:
        assert logs.by_index[0] is logs.by_index[1]
        assert logs.by_index[2] is not logs.by_index[0]
        assert 3 not in logs.by_index
    finally:
        logs.close()


def test_server_logs_are_created_at_once_not_at_the_first_line(tmp_path: Path) -> None:
    logs = ServerLogs(servers(tmp_path, "error_log quiet.log crit;"))
    try:
        assert (tmp_path / "quiet.log").exists()
    finally:
        logs.close()


def test_a_server_log_that_cannot_be_opened_closes_the_others(tmp_path: Path) -> None:
    found = servers(tmp_path, "error_log first.log;", "error_log missing/second.log;")
    gc.collect()  # sockets earlier tests dropped close now, not in the middle of ours
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(LogOpenError, match=r"missing/second\.log"):
        ServerLogs(found)
    assert set(os.listdir("/proc/self/fd")) - before == set()


def test_server_logs_reopen_a_rotated_file(tmp_path: Path) -> None:
    logs = ServerLogs(servers(tmp_path, "error_log own.log info;"))
    (tmp_path / "own.log").rename(tmp_path / "own.log.1")
    assert logs.reopen() == []
    logs.by_index[0].info("after")
    logs.close()
    assert "after" in (tmp_path / "own.log").read_text()
    assert "after" not in (tmp_path / "own.log.1").read_text()
