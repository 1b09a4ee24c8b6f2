"""Opening listeners: nginx's bind error wording, unix socket files."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from mailgate.config import model
from mailgate.master.listeners import (
    BindError,
    close_all,
    key,
    open_all,
    open_socket,
    reuse_or_open,
)
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


def _config(*listens: model.Listen) -> model.Config:
    server = model.ServerConfig(source=SOURCE, listens=listens, protocol=model.Protocol.IMAP)
    return model.Config(path="/x.conf", prefix="/", main=model.MainConfig(), servers=(server,))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_inherited_socket_is_used_and_an_unnamed_one_closed() -> None:
    kept_listen = model.Listen(socket.AF_INET, "127.0.0.1", _free_port(), SOURCE, backlog=9)
    other = open_socket(model.Listen(socket.AF_INET, "127.0.0.1", 0, SOURCE), ErrorLog())
    inherited = open_socket(replace(kept_listen, backlog=1), ErrorLog())
    fresh_listen = model.Listen(socket.AF_INET, "127.0.0.1", _free_port(), SOURCE)
    opened = open_all(_config(kept_listen, fresh_listen), ErrorLog(), [inherited, other])
    try:
        assert opened[0].sock is inherited
        assert opened[1].sock.getsockname() == ("127.0.0.1", fresh_listen.port)
        assert other.fileno() == -1  # closed: no listen names it
    finally:
        close_all(opened)


def test_ipv6_addresses_match_in_any_spelling() -> None:
    listen = model.Listen(socket.AF_INET6, "0:0:0:0:0:0:0:1", 993, SOURCE)
    assert key(listen) == (int(socket.AF_INET6), "::1", 993)


def test_reload_reapplies_the_parameters_of_a_kept_socket() -> None:
    listen = model.Listen(socket.AF_INET, "127.0.0.1", _free_port(), SOURCE)
    current = open_all(_config(listen), ErrorLog())
    changed = replace(listen, rcvbuf=40000, so_keepalive=model.KeepAlive(on=True, idle=30))
    try:
        result = reuse_or_open(_config(changed), current, ErrorLog())
        sock = result[0].sock
        assert sock is current[0].sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 40000
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
    finally:
        close_all(current)


def test_a_failed_bind_on_reload_leaves_kept_sockets_untouched() -> None:
    listen = model.Listen(socket.AF_INET, "127.0.0.1", _free_port(), SOURCE)
    current = open_all(_config(listen), ErrorLog())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        clash = model.Listen(socket.AF_INET, "127.0.0.1", taken.getsockname()[1], SOURCE)
        changed = replace(listen, rcvbuf=40000)
        try:
            with pytest.raises(BindError):
                reuse_or_open(_config(changed, clash), current, ErrorLog())
            rcvbuf = current[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            assert rcvbuf != 2 * 40000
        finally:
            close_all(current)


def _nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_accepted_tcp_sockets_inherit_nodelay_from_the_listener() -> None:
    # Workers rely on it instead of a setsockopt() per connection: without TCP_NODELAY the
    # greeting after a handshake waits for the client's delayed ACK.
    listen = model.Listen(socket.AF_INET, "127.0.0.1", _free_port(), SOURCE)
    with open_socket(listen, ErrorLog()) as listener:
        listener.setblocking(True)
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert _nodelay(listener) == 1
                assert _nodelay(accepted) == 1
                assert _nodelay(client) == 0


def test_an_inherited_listener_gets_nodelay() -> None:
    port = _free_port()
    listen = model.Listen(socket.AF_INET, "127.0.0.1", port, SOURCE)
    old = socket.create_server(("127.0.0.1", port))  # an older binary's, without the option
    assert _nodelay(old) == 0
    opened = open_all(_config(listen), ErrorLog(), inherited=[old])
    try:
        assert opened[0].sock is old
        assert _nodelay(old) == 1
    finally:
        close_all(opened)
