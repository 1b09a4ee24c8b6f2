"""Every configuration error: nginx's words, and the file and line it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config import loader
from mailgate.config.errors import ConfigError
from tests.unit.config.conftest import Load, mail

SERVER_LINE = 4  # the "server {" line of conftest.mail()
LISTEN_LINE = 5


def error_of(load: Load, text: str, **kwargs: str) -> tuple[str, int]:
    with pytest.raises(ConfigError) as caught:
        load(text, **kwargs)
    return caught.value.message, caught.value.line


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("foo;", 'unknown directive "foo"', 1),
        ("\n\nlisten 25;", '"listen" directive is not allowed here', 3),
        ("daemon on off;", 'invalid number of arguments in "daemon" directive', 1),
        ("daemon on;\ndaemon off;", '"daemon" directive is duplicate', 2),
        ("daemon yes;", 'invalid value "yes" in "daemon" directive, it must be "on" or "off"', 1),
        ("daemon on {}", 'directive "daemon" is not terminated by ";"', 1),
        ("events;", 'directive "events" has no opening "{"', 1),
        ("events {}\nevents {}", '"events" directive is duplicate', 2),
        ("events {\n", 'unexpected end of file, expecting "}"', 2),
        ("}", 'unexpected "}"', 1),
        ("worker_processes many;", '"worker_processes" directive invalid value', 1),
        ("events { worker_connections x; }", 'invalid number "x"', 1),
        ("worker_rlimit_nofile -1;", '"worker_rlimit_nofile" directive invalid number', 1),
        ("worker_shutdown_timeout 1x;", '"worker_shutdown_timeout" directive invalid value', 1),
        ("error_log x.log loud;", 'invalid log level "loud"', 1),
        ("error_log x.log warn info;", 'duplicate log level "info"', 1),
        ("http {}\nhttp {}", '"http" directive is duplicate', 2),
        ("mail {}\nmail {}", '"mail" directive is duplicate', 2),
        (mail(mail_level="timeout 5x;"), '"timeout" directive invalid value', 3),
        (mail(mail_level="proxy_buffer 4q;"), '"proxy_buffer" directive invalid value', 3),
        (mail(mail_level="max_errors x;"), '"max_errors" directive invalid number', 3),
        (mail(mail_level="starttls maybe;"), 'invalid value "maybe"', 3),
        (mail(mail_level="imap_auth plain digest;"), 'invalid value "digest"', 3),
        (mail(mail_level="pop3_auth none;"), 'invalid value "none"', 3),
        (mail(mail_level="ssl on;"), 'unknown directive "ssl"', 3),
        (mail(server="protocol nntp;"), 'unknown protocol "nntp"', 7),
        (mail(mail_level="resolver off;\nresolver off;"), '"resolver" directive is duplicate', 4),
        (mail(mail_level="resolver 1.1.1.1 valid=x;"), "invalid parameter: valid=x", 3),
        (mail(mail_level="resolver 1.1.1.1 ipv6=no;"), "invalid parameter: ipv6=no", 3),
        (
            mail(mail_level="resolver 1.1.1.1 ipv4=off ipv6=off;"),
            '"ipv4" and "ipv6" cannot both be "off"',
            3,
        ),
        (mail(mail_level="resolver nowhere.test;"), 'host not found in resolver "nowhere.test"', 3),
        (
            mail(mail_level="ssl_session_cache shared:X:1k;"),
            'session cache "shared:X:1k" is too small',
            3,
        ),
        (mail(mail_level="ssl_session_cache lots;"), 'invalid session cache "lots"', 3),
        (mail(mail_level="ssl_session_cache builtin:;"), 'invalid session cache "builtin:"', 3),
        (mail(mail_level="ssl_session_cache shared:X;"), 'invalid session cache "shared:X"', 3),
        (
            mail(mail_level="ssl_protocols TLSv1.2 SSLv3;"),
            '"ssl_protocols" directive: "SSLv3" is not supported by mailgate, '
            "use TLSv1.2 or TLSv1.3",
            3,
        ),
        (mail(mail_level="ssl_protocols TLSv9;"), 'invalid value "TLSv9"', 3),
        (
            mail(mail_level="ssl_certificate_key engine:pkcs11:id;"),
            '"ssl_certificate_key" directive: "engine:pkcs11:id" is not supported by '
            "mailgate, only PEM files and data: keys are",
            3,
        ),
        (
            mail(mail_level="ssl_password_file a;\nssl_password_file b;"),
            '"ssl_password_file" directive is duplicate',
            4,
        ),
        (mail(mail_level="auth_http 127.0.0.1:0;"), 'invalid port in auth_http "127.0.0.1:0"', 3),
        (
            mail(mail_level="auth_http http://nowhere.test/a;"),
            'host not found in auth_http "nowhere.test/a"',
            3,
        ),
        (
            mail(mail_level="auth_http https://auth.test/;"),
            'auth_http "https://auth.test/" is not supported: '
            "mailgate talks plain HTTP to the auth server",
            3,
        ),
        (
            mail(mail_level="set_real_ip_from nowhere.test;"),
            'host not found in set_real_ip_from "nowhere.test"',
            3,
        ),
        (
            mail(mail_level="proxy_protocol v3;"),
            'invalid value "v3"',
            3,
        ),
        (
            mail(mail_level="proxy_pass 192.0.2.1;"),
            'no port in "192.0.2.1" of the "proxy_pass" directive',
            3,
        ),
        ("mail { server { protocol imap; } }", 'no "listen" is defined for server', 1),
        ("mail {\n server {\n listen 127.0.0.1:2000; } }", "unknown mail protocol for server", 2),
        (
            mail(server="listen 127.0.0.1:1143;"),
            'duplicate "127.0.0.1:1143" address and port pair',
            7,
        ),
        (
            "mail {\n server {\n listen 1143;\n protocol imap; } }",
            'no "auth_http" is defined for server',
            2,
        ),
        (
            mail(server="listen 127.0.0.1:993 ssl;"),
            'no "ssl_certificate" is defined for the "listen ... ssl" directive',
            7,
        ),
        (
            mail(server="ssl_certificate a.pem;\nlisten 127.0.0.1:993 ssl;"),
            'no "ssl_certificate_key" is defined for the "listen ... ssl" directive',
            8,
        ),
        (
            mail(
                server="ssl_certificate a.pem;\nssl_certificate b.pem;\n"
                "ssl_certificate_key a.key;\nlisten 127.0.0.1:993 ssl;"
            ),
            'no "ssl_certificate_key" is defined for certificate "b.pem" '
            'and the "listen ... ssl" directive',
            10,
        ),
        (
            mail(mail_level="starttls on;"),
            'no "ssl_certificate" is defined for the "starttls" directive',
            3,
        ),
        (
            mail(mail_level="ssl_certificate a.pem;"),
            'no "ssl_certificate_key" is defined for certificate "a.pem"',
            SERVER_LINE,
        ),
        (
            mail(
                mail_level="starttls only; ssl_certificate a; ssl_certificate_key k;",
                server="ssl_verify_client on;",
            ),
            "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client",
            SERVER_LINE,
        ),
        (
            mail(server="proxy_pass 192.0.2.1:143;"),
            'both "auth_http" and "proxy_pass" are defined for server, mailgate needs one',
            SERVER_LINE,
        ),
        (
            "mail { proxy_pass 192.0.2.1:25; server { listen 127.0.0.1:25; } }",
            '"proxy_pass" needs "proxy_smtp_auth on" for an smtp server',
            1,
        ),
    ],
)
def test_error_message_and_line(load: Load, text: str, message: str, line: int) -> None:
    assert error_of(load, text) == (message, line)


def test_error_string_ends_with_file_and_line(load: Load, conf_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load("\nfoo;")
    assert str(caught.value) == f'unknown directive "foo" in {conf_path}:2'


def test_missing_main_file_is_a_file_level_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.conf"
    with pytest.raises(ConfigError) as caught:
        loader.load(str(missing))
    assert caught.value.line == 0
    assert str(caught.value) == f'open() "{missing}" failed (2: No such file or directory)'


def test_error_in_command_line_directives_names_the_command_line(load: Load) -> None:
    with pytest.raises(ConfigError) as caught:
        load("", extra="daemon maybe;")
    assert str(caught.value) == (
        'invalid value "maybe" in "daemon" directive, it must be "on" or "off" in command line'
    )


def test_blocks_are_refused_in_command_line_directives(load: Load) -> None:
    with pytest.raises(ConfigError, match="block directives are not supported in -g option"):
        load("", extra="events { }")


def test_command_line_directive_repeated_in_file_is_duplicate_in_file(
    load: Load, conf_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        load("daemon on;", extra="daemon off;")
    assert str(caught.value) == f'"daemon" directive is duplicate in {conf_path}:1'
