"""Opening listeners: nginx's bind error wording, unix socket files."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailgate.config import model
from mailgate.master.listeners import BindError, close_all, open_socket
from mailgate.master.log import ErrorLog
from mailgate.worker.process import Listening

SOURCE = model.Source("/x.conf", 3)


def test_bind_error_is_worded_as_nginx() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = model.Listen(socket.AF_INET, "127.0.0.1", port, SOURCE)
        with pytest.raises(BindError) as err:
            open_socket(listen, ErrorLog())
    assert str(err.value) == f"bind() to 127.0.0.1:{port} failed (98: Address already in use)"


def test_unix_listener_file_is_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    listen = model.Listen(socket.AF_UNIX, str(path), 0, SOURCE)
    server = model.ServerConfig(source=SOURCE, listens=(listen,), protocol=model.Protocol.IMAP)
    sock = open_socket(listen, ErrorLog())
    assert path.is_socket()
    close_all([Listening(sock, listen, server)])
    assert not path.exists()
