"""Reading the pid file for ``-s``, with nginx's messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.master import pidfile


def test_written_pid_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    pidfile.write(str(path), 4321)
    assert path.read_text() == "4321\n"
    assert pidfile.read(str(path)) == 4321


def test_missing_file_is_an_open_error(tmp_path: Path) -> None:
    path = tmp_path / "none.pid"
    with pytest.raises(pidfile.PidFileError) as err:
        pidfile.read(str(path))
    assert str(err.value) == f'open() "{path}" failed (2: No such file or directory)'


@pytest.mark.parametrize("content", ["", "abc\n", "0\n", "-5\n"])
def test_garbage_is_an_invalid_pid(tmp_path: Path, content: str) -> None:
    path = tmp_path / "m.pid"
    path.write_text(content)
    with pytest.raises(pidfile.PidFileError, match=r"^invalid PID number"):
        pidfile.read(str(path))


def test_remove_tolerates_a_missing_file(tmp_path: Path) -> None:
    pidfile.remove(str(tmp_path / "gone.pid"))
    assert not (tmp_path / "gone.pid").exists()


def test_pid_file_moves_aside_during_an_upgrade_and_back(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    pid = pidfile.PidFile(str(path))
    pid.write(100)
    pid.move_aside()
    assert not path.exists()
    assert (tmp_path / "m.pid.oldbin").read_text() == "100\n"
    pidfile.write(str(path), 200)  # the new master's
    pid.move_back()  # the new master exited
    assert path.read_text() == "100\n"
    assert not (tmp_path / "m.pid.oldbin").exists()


def test_old_master_removes_only_its_oldbin_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pid"
    pid = pidfile.PidFile(str(path))
    pid.write(100)
    pid.move_aside()
    pidfile.write(str(path), 200)
    pid.remove()
    assert path.read_text() == "200\n"
    assert not (tmp_path / "m.pid.oldbin").exists()
