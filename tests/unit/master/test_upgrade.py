"""The binary upgrade's pieces: the fd list, inherited sockets, the new master's argv."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from mailgate.config import model
from mailgate.master import upgrade
from mailgate.master.log import ErrorLog
from mailgate.worker.process import Listening

SOURCE = model.Source("/x.conf", 1)


def quiet_log() -> ErrorLog:
    log = ErrorLog()
    log.console = False
    return log


def listener() -> Listening:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    listen = model.Listen(socket.AF_INET, "127.0.0.1", sock.getsockname()[1], SOURCE)
    server = model.ServerConfig(source=SOURCE, listens=(listen,), protocol=model.Protocol.IMAP)
    return Listening(sock, listen, server)


def test_fds_value_is_nginx_format() -> None:
    a, b = listener(), listener()
    with a.sock, b.sock:
        assert upgrade.fds_value([a, b]) == f"{a.sock.fileno()};{b.sock.fileno()};"


@pytest.mark.parametrize(
    ("value", "fds"),
    [("3;4;", [3, 4]), ("3:4:", [3, 4]), ("3;x;5;", [3]), ("", []), ("7", [7])],
)
def test_parse_fds_stops_at_a_bad_number(value: str, fds: list[int]) -> None:
    assert upgrade.parse_fds(value, quiet_log()) == fds


def test_inherited_sockets_are_rebuilt_and_the_variable_dropped() -> None:
    a = listener()
    dup = os.dup(a.sock.fileno())
    not_a_socket = os.open(os.devnull, os.O_RDONLY)
    environ = {upgrade.ENV_FDS: f"{dup};{not_a_socket};"}
    try:
        sockets = upgrade.inherited_sockets(environ, quiet_log())
        assert sockets is not None
        assert [s.getsockname() for s in sockets] == [a.sock.getsockname()]
        assert sockets[0].family == socket.AF_INET and sockets[0].get_inheritable()
        assert upgrade.ENV_FDS not in environ
        sockets[0].close()
    finally:
        a.sock.close()
        os.close(not_a_socket)


def test_a_cold_start_has_no_inherited_sockets() -> None:
    assert upgrade.inherited_sockets({}, quiet_log()) is None


def test_command_line_reruns_this_interpreter_with_the_original_arguments() -> None:
    assert upgrade.command_line() == [sys.executable, *sys.orig_argv[1:]]
