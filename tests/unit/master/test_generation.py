"""A generation's servers' error logs: opened by prepare, released by retire or a failure."""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

import pytest

from mailgate.config import loader, model
from mailgate.master import generation
from mailgate.master.log import ErrorLog


def open_fds() -> set[str]:
    gc.collect()  # sockets earlier tests dropped close now, not in the middle of ours
    return set(os.listdir("/proc/self/fd"))


def config(tmp_path: Path, port: int, log_name: str) -> model.Config:
    conf = tmp_path / "mailgate.conf"
    conf.write_text(
        "mail { auth_http 127.0.0.1:9000;\n"
        f"server {{ listen 127.0.0.1:{port}; protocol imap; error_log {log_name} info; }}\n"
        "}\n"
    )
    return loader.load(str(conf))


@pytest.fixture
def port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        number: int = sock.getsockname()[1]
        return number


def test_prepare_opens_the_server_logs_and_retire_closes_the_old_ones(
    tmp_path: Path, port: int
) -> None:
    log = ErrorLog()
    before = open_fds()
    first = generation.prepare(config(tmp_path, port, "one.log"), {}, log)
    first.server_logs.by_index[0].info("first")
    second = generation.prepare(config(tmp_path, port, "two.log"), {}, log, previous=first)
    second.server_logs.by_index[0].info("second")
    generation.retire(first, second)
    assert "first" in (tmp_path / "one.log").read_text()
    assert "second" in (tmp_path / "two.log").read_text()
    generation.retire(second, generation.Generation(2, second.config, {}, []))
    assert open_fds() - before == set()


def test_a_prepare_that_cannot_bind_leaves_no_server_log_open(tmp_path: Path, port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        before = open_fds()
        with pytest.raises(generation.PrepareError):
            generation.prepare(config(tmp_path, port, "own.log"), {}, ErrorLog())
        assert open_fds() - before == set()
