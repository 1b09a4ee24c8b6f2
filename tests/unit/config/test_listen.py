"""``listen``: address forms, parameters, and the protocol its port implies."""

from __future__ import annotations

import socket

import pytest

from mailgate.config import model
from mailgate.config.errors import ConfigError
from tests.unit.config.conftest import Load


def listens(load: Load, listen: str, extra: str = "protocol imap;") -> tuple[model.Listen, ...]:
    text = f"mail {{ auth_http 127.0.0.1:9; server {{ listen {listen}; {extra} }} }}"
    return load(text).servers[0].listens


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:993", [(socket.AF_INET, "127.0.0.1", 993)]),
        ("*:993", [(socket.AF_INET, "0.0.0.0", 993)]),
        ("993", [(socket.AF_INET, "0.0.0.0", 993)]),
        ("[::1]:993", [(socket.AF_INET6, "::1", 993)]),
        ("[::]:993", [(socket.AF_INET6, "::", 993)]),
        ("localhost:993", [(socket.AF_INET, "127.0.0.1", 993), (socket.AF_INET6, "::1", 993)]),
        ("unix:/run/mg.sock", [(socket.AF_UNIX, "/run/mg.sock", 0)]),
    ],
)
def test_address_forms(load: Load, address: str, expected: list[tuple[object, ...]]) -> None:
    assert [(x.family, x.host, x.port) for x in listens(load, address)] == expected


def test_listen_text_is_nginx_address_text(load: Load) -> None:
    found = listens(load, "localhost:993")
    assert [x.text for x in found] == ["127.0.0.1:993", "[::1]:993"]


def test_plain_listen_has_nginx_defaults(load: Load) -> None:
    (listen,) = listens(load, "127.0.0.1:993")
    assert (listen.ssl, listen.backlog, listen.bind, listen.ipv6only) == (False, 511, False, True)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("proxy_protocol", {"proxy_protocol": True}),
        ("bind", {"bind": True}),
        ("backlog=64", {"backlog": 64, "bind": True}),
        ("rcvbuf=64k sndbuf=1m", {"rcvbuf": 65536, "sndbuf": 1048576, "bind": True}),
        ("ipv6only=off", {"ipv6only": False, "bind": True}),
        ("multipath", {"multipath": True, "bind": True}),
        ("so_keepalive=on", {"so_keepalive": model.KeepAlive(True), "bind": True}),
        ("so_keepalive=off", {"so_keepalive": model.KeepAlive(False), "bind": True}),
        ("so_keepalive=30m::10", {"so_keepalive": model.KeepAlive(True, 1800, None, 10)}),
        ("so_keepalive=:5s:", {"so_keepalive": model.KeepAlive(True, None, 5, None)}),
        ("so_keepalive=1h:2:3", {"so_keepalive": model.KeepAlive(True, 3600, 2, 3)}),
    ],
)
def test_parameters(load: Load, params: str, expected: dict[str, object]) -> None:
    (listen,) = listens(load, f"[::]:1143 {params}")
    for name, value in expected.items():
        assert getattr(listen, name) == value


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("127.0.0.1:993 reuseport", 'the invalid "reuseport" parameter'),
        ("127.0.0.1:993 backlog=0", 'invalid backlog "backlog=0"'),
        ("127.0.0.1:993 backlog=x", 'invalid backlog "backlog=x"'),
        ("127.0.0.1:993 rcvbuf=x", 'invalid rcvbuf "rcvbuf=x"'),
        ("127.0.0.1:993 sndbuf=", 'invalid sndbuf "sndbuf="'),
        ("127.0.0.1:993 ipv6only=oui", 'invalid ipv6only flags "oui"'),
        ("127.0.0.1:993 so_keepalive=x", 'invalid so_keepalive value: "x"'),
        ("127.0.0.1:993 so_keepalive=::", 'invalid so_keepalive value: "::"'),
        ("127.0.0.1:0", 'invalid port in "127.0.0.1:0" of the "listen" directive'),
        ("127.0.0.1:70000", 'invalid port in "127.0.0.1:70000" of the "listen" directive'),
        ("127.0.0.1", 'no port in "127.0.0.1" of the "listen" directive'),
        ("[::1:993", 'invalid host in "[::1:993" of the "listen" directive'),
        ("[zz]:993", 'invalid IPv6 address in "[zz]:993" of the "listen" directive'),
        ("nowhere.test:993", 'host not found in "nowhere.test:993" of the "listen" directive'),
        ("127.0.0.1:993/x", 'invalid host in "127.0.0.1:993/x" of the "listen" directive'),
        ("unix:", 'no path in the unix domain socket in "unix:" of the "listen" directive'),
    ],
)
def test_invalid_listen(load: Load, listen: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        listens(load, listen)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("port", "protocol"),
    [
        (143, model.Protocol.IMAP),
        (993, model.Protocol.IMAP),
        (110, model.Protocol.POP3),
        (995, model.Protocol.POP3),
        (25, model.Protocol.SMTP),
        (465, model.Protocol.SMTP),
        (587, model.Protocol.SMTP),
    ],
)
def test_protocol_follows_port(load: Load, port: int, protocol: model.Protocol) -> None:
    text = f"mail {{ auth_http 127.0.0.1:9; server {{ listen 127.0.0.1:{port}; }} }}"
    assert load(text).servers[0].protocol is protocol


def test_protocol_directive_overrides_port(load: Load) -> None:
    text = "mail { auth_http 127.0.0.1:9; server { listen 127.0.0.1:25; protocol pop3; } }"
    assert load(text).servers[0].protocol is model.Protocol.POP3


def test_ssl_listen_needs_no_starttls(load: Load) -> None:
    text = (
        "mail { auth_http 127.0.0.1:9; ssl_certificate /c; ssl_certificate_key /k;"
        " server { listen 127.0.0.1:993 ssl; } }"
    )
    server = load(text).servers[0]
    assert server.listens[0].ssl and server.tls_enabled


def test_same_address_in_two_servers_is_duplicate(load: Load) -> None:
    text = (
        "mail { auth_http 127.0.0.1:9;\n"
        "server { listen 127.0.0.1:143; }\n"
        "server { listen 127.0.0.1:143; } }"
    )
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert (caught.value.message, caught.value.line) == (
        'duplicate "127.0.0.1:143" address and port pair',
        3,
    )


def test_wildcard_and_specific_address_may_share_a_port(load: Load) -> None:
    text = "mail { auth_http 127.0.0.1:9; server { listen 143; } server { listen 127.0.0.1:143; } }"
    assert len(load(text).listens) == 2
