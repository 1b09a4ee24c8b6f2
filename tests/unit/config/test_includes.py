"""``include``: files and globs, line numbers and errors through them, and ``-T``'s file list."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config.errors import ConfigError
from tests.unit.config.conftest import Load, mail


def test_included_file_is_parsed_in_place(load: Load, tmp_path: Path) -> None:
    (tmp_path / "servers.conf").write_text("server { listen 127.0.0.1:143; }\n")
    config = load("mail { auth_http 127.0.0.1:9; include servers.conf; }")
    assert config.servers[0].source.path == str(tmp_path / "servers.conf")


def test_glob_includes_files_in_sorted_order(load: Load, tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "b.conf").write_text("server { listen 127.0.0.1:110; }")
    (tmp_path / "conf.d" / "a.conf").write_text("server { listen 127.0.0.1:143; }")
    config = load("mail { auth_http 127.0.0.1:9; include conf.d/*.conf; }")
    assert [s.listens[0].port for s in config.servers] == [143, 110]


def test_glob_without_match_is_fine(load: Load) -> None:
    assert load("include nothing/*.conf;").servers == ()


def test_missing_plain_include_names_the_including_line(
    load: Load, tmp_path: Path, conf_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        load("\ninclude missing.conf;")
    assert str(caught.value) == (
        f'open() "{tmp_path / "missing.conf"}" failed (2: No such file or directory) '
        f"in {conf_path}:2"
    )


def test_error_inside_included_file_names_that_file_and_line(load: Load, tmp_path: Path) -> None:
    (tmp_path / "inc.conf").write_text("\n\nbogus;\n")
    with pytest.raises(ConfigError) as caught:
        load("include inc.conf;")
    assert str(caught.value) == f'unknown directive "bogus" in {tmp_path / "inc.conf"}:3'


def test_server_check_names_included_file(load: Load, tmp_path: Path) -> None:
    (tmp_path / "s.conf").write_text("\nserver {\n protocol imap; }")
    with pytest.raises(ConfigError) as caught:
        load("mail { auth_http 127.0.0.1:9; include s.conf; }")
    assert str(caught.value) == f'no "listen" is defined for server in {tmp_path / "s.conf"}:2'


def test_block_cannot_close_in_included_file(load: Load, tmp_path: Path) -> None:
    (tmp_path / "close.conf").write_text("}")
    with pytest.raises(ConfigError, match='unexpected "}"'):
        load("mail { include close.conf;")


def test_nested_include_resolves_against_main_config_folder(load: Load, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "one.conf").write_text("include two.conf;")
    (tmp_path / "two.conf").write_text("daemon off;")
    assert load("include sub/one.conf;").main.daemon is False


def test_include_loop_is_an_error_not_a_crash(load: Load, conf_path: Path) -> None:
    with pytest.raises(ConfigError, match='too deep nesting of "include"'):
        load(f"include {conf_path.name};")


def test_files_lists_each_file_read_with_its_text(load: Load, tmp_path: Path) -> None:
    (tmp_path / "inc.conf").write_text("daemon off;\n")
    text = "include inc.conf;\n" + mail()
    config = load(text)
    assert [(f.path, f.text) for f in config.files] == [
        (str(tmp_path / "mailgate.conf"), text),
        (str(tmp_path / "inc.conf"), "daemon off;\n"),
    ]


def test_directory_as_include_is_an_error(load: Load, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigError, match=r'pread\(\) ".*dir" failed \(21: Is a directory\)'):
        load("include dir;")
