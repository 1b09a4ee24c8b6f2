"""The error log: nginx's line format, thresholds, reopen."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mailgate.config import model
from mailgate.master.log import ErrorLog, Level, LogOpenError, console_line, format_line


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


def test_memory_target_falls_back_to_stderr_with_a_warning() -> None:
    log, notes = ErrorLog.from_config([model.LogTarget("memory:32m", "info")])
    assert log.has_stderr
    assert notes == ['error_log "memory:" is not supported yet, logging to stderr']


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
