"""A server holds its own value, else the mail level's, else nginx's default."""

from __future__ import annotations

from mailgate.config import model
from tests.unit.config.conftest import Load

TWO_SERVERS = """
mail {{
    auth_http 127.0.0.1:9000;
    {mail_level}
    server {{ listen 127.0.0.1:1143; protocol imap; {first} }}
    server {{ listen 127.0.0.1:1144; protocol imap; }}
}}
"""


def servers(load: Load, mail_level: str, first: str = "") -> tuple[model.ServerConfig, ...]:
    return load(TWO_SERVERS.format(mail_level=mail_level, first=first)).servers


def test_server_inherits_mail_level_value(load: Load) -> None:
    first, second = servers(load, "timeout 5s;")
    assert (first.timeout, second.timeout) == (5.0, 5.0)


def test_server_value_overrides_mail_level(load: Load) -> None:
    first, second = servers(load, "timeout 5s;", "timeout 7s;")
    assert (first.timeout, second.timeout) == (7.0, 5.0)


def test_server_capabilities_replace_mail_level_ones(load: Load) -> None:
    first, second = servers(load, "imap_capabilities A B;", "imap_capabilities C;")
    assert (first.imap_capabilities, second.imap_capabilities) == (("C",), ("A", "B"))


def test_server_headers_replace_the_inherited_set(load: Load) -> None:
    first, second = servers(load, "auth_http_header A 1;", "auth_http_header B 2;")
    assert first.auth_http_header == (("B", "2"),)
    assert second.auth_http_header == (("A", "1"),)


def test_ssl_conf_command_is_inherited_only_without_own(load: Load) -> None:
    first, second = servers(load, "ssl_conf_command A 1;", "ssl_conf_command B 2;")
    assert [(c.name, c.value) for c in first.ssl_conf_command] == [("B", "2")]
    assert [(c.name, c.value) for c in second.ssl_conf_command] == [("A", "1")]


def test_server_certificates_replace_inherited_ones(load: Load) -> None:
    first, second = servers(
        load,
        "ssl_certificate /m.pem; ssl_certificate_key /m.key;",
        "ssl_certificate /s.pem; ssl_certificate_key /s.key;",
    )
    assert (first.ssl_certificate, second.ssl_certificate) == (("/s.pem",), ("/m.pem",))


def test_resolver_is_inherited_whole(load: Load) -> None:
    first, second = servers(load, "resolver 192.0.2.1 valid=5s;", "resolver 192.0.2.2;")
    assert (first.resolver, first.resolver_valid) == (("192.0.2.2:53",), None)
    assert (second.resolver, second.resolver_valid) == (("192.0.2.1:53",), 5.0)


def test_auth_http_set_in_server_only_applies_there(load: Load) -> None:
    text = """
    mail {
        auth_http 127.0.0.1:9000;
        server { listen 127.0.0.1:1143; protocol imap; auth_http 127.0.0.1:9001; }
        server { listen 127.0.0.1:1144; protocol imap; }
    }"""
    first, second = load(text).servers
    assert (
        first.auth_http and first.auth_http.port,
        second.auth_http and second.auth_http.port,
    ) == (
        9001,
        9000,
    )


def test_shared_cache_is_inherited_beside_own_builtin_mode(load: Load) -> None:
    first, _ = servers(load, "ssl_session_cache shared:S:1m;", "ssl_session_cache builtin;")
    assert first.ssl_session_cache == model.SessionCache(
        builtin=True, shared_name="S", shared_size=1048576
    )


def test_starttls_from_mail_level_needs_certificate_in_each_server(load: Load) -> None:
    first, _ = servers(load, "starttls on; ssl_certificate /c; ssl_certificate_key /k;")
    assert first.starttls is model.StartTLS.ON
    assert first.tls_enabled
