"""The files a configuration names, checked by the master at -t, start and reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config import loader, model
from mailgate.master import files


def config(tmp_path: Path, server: str) -> model.Config:
    conf = tmp_path / "mailgate.conf"
    conf.write_text(
        "mail { auth_http 127.0.0.1:9000;\n"
        f"server {{ listen 127.0.0.1:1143; protocol imap; {server} }}\n"
        "}\n"
    )
    return loader.load(str(conf))


def test_a_server_error_log_in_a_missing_folder_fails_the_check(tmp_path: Path) -> None:
    with pytest.raises(files.FileCheckError) as caught:
        files.check(config(tmp_path, "error_log missing/own.log info;"))
    missing = tmp_path / "missing" / "own.log"
    assert str(caught.value) == f'open() "{missing}" failed (2: No such file or directory)'


def test_the_check_creates_the_server_error_logs_as_nginx_t_does(tmp_path: Path) -> None:
    files.check(config(tmp_path, "error_log own.log; error_log stderr; error_log own.log info;"))
    assert (tmp_path / "own.log").exists()


def test_only_files_are_server_error_log_paths(tmp_path: Path) -> None:
    found = config(
        tmp_path, "error_log stderr; error_log syslog:server=127.0.0.1; error_log a.log;"
    )
    assert files.server_error_log_paths(found) == [str(tmp_path / "a.log")]
