"""Good configurations and the typed values they produce."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from mailgate.config import loader, model
from mailgate.config.setters import parse_size, parse_time
from tests.unit.config.conftest import Load, mail


def server_value(config: model.Config, name: str) -> object:
    return getattr(config.servers[0], name)


@pytest.mark.parametrize(
    ("directive", "field", "expected"),
    [
        ("timeout 90s;", "timeout", 90.0),
        ("timeout 1h30m;", "timeout", 5400.0),
        ("timeout 500ms;", "timeout", 0.5),
        ("timeout 2;", "timeout", 2.0),
        ("resolver_timeout '1m 5s';", "resolver_timeout", 65.0),
        ("ssl_session_timeout 1d;", "ssl_session_timeout", 86400.0),
        ("proxy_buffer 16k;", "proxy_buffer", 16384),
        ("imap_client_buffer 1m;", "imap_client_buffer", 1048576),
        ("smtp_client_buffer 100;", "smtp_client_buffer", 100),
        ("smtp_greeting_delay 1s;", "smtp_greeting_delay", 1.0),
        ("max_errors 3;", "max_errors", 3),
        ("server_name mx.example.com;", "server_name", "mx.example.com"),
        (
            "starttls only; ssl_certificate c; ssl_certificate_key k;",
            "starttls",
            model.StartTLS.ONLY,
        ),
        (
            "ssl_verify_client optional_no_ca;",
            "ssl_verify_client",
            model.VerifyClient.OPTIONAL_NO_CA,
        ),
        ("ssl_verify_depth 3;", "ssl_verify_depth", 3),
        ("ssl_protocols TLSv1.3 tlsv1.2;", "ssl_protocols", ("TLSv1.2", "TLSv1.3")),
        ("ssl_ciphers ECDHE;", "ssl_ciphers", "ECDHE"),
        ("ssl_ecdh_curve X25519:prime256v1;", "ssl_ecdh_curve", "X25519:prime256v1"),
        ("ssl_prefer_server_ciphers ON;", "ssl_prefer_server_ciphers", True),
        ("ssl_session_tickets off;", "ssl_session_tickets", False),
        ("ssl_certificate_compression on;", "ssl_certificate_compression", True),
        ("ssl_session_cache off;", "ssl_session_cache", model.SessionCache(off=True)),
        ("ssl_session_cache none;", "ssl_session_cache", model.SessionCache()),
        ("ssl_session_cache builtin;", "ssl_session_cache", model.SessionCache(builtin=True)),
        (
            "ssl_session_cache shared:S:1m;",
            "ssl_session_cache",
            model.SessionCache(shared_name="S", shared_size=1048576),
        ),
        (
            "ssl_session_cache builtin:100 shared:S:32k;",
            "ssl_session_cache",
            model.SessionCache(builtin=True, builtin_size=100, shared_name="S", shared_size=32768),
        ),
        ("auth_http_timeout 5s;", "auth_http_timeout", 5.0),
        (
            "auth_http_header A 1; auth_http_header B 2;",
            "auth_http_header",
            (("A", "1"), ("B", "2")),
        ),
        ("auth_http_pass_client_cert on;", "auth_http_pass_client_cert", True),
        ("proxy on;", "proxy", True),
        ("proxy_timeout 1h;", "proxy_timeout", 3600.0),
        ("proxy_pass_error_message on;", "proxy_pass_error_message", True),
        ("xclient off;", "xclient", False),
        ("proxy_smtp_auth on;", "proxy_smtp_auth", True),
        ("proxy_protocol v2;", "proxy_protocol", model.ProxyProtocolOut.V2),
        ("proxy_protocol on;", "proxy_protocol", model.ProxyProtocolOut.V1),
        ("imap_capabilities IDLE; imap_capabilities ID;", "imap_capabilities", ("IDLE", "ID")),
        ("imap_auth login cram-md5;", "imap_auth", ("login", "cram-md5")),
        ("pop3_capabilities TOP;", "pop3_capabilities", ("TOP",)),
        ("pop3_auth apop plain;", "pop3_auth", ("plain", "apop")),
        (
            'smtp_capabilities "SIZE 10485760" 8BITMIME;',
            "smtp_capabilities",
            ("SIZE 10485760", "8BITMIME"),
        ),
        ("smtp_auth none;", "smtp_auth", ("none",)),
        (
            "set_real_ip_from 192.0.2.0/24;",
            "set_real_ip_from",
            (ipaddress.ip_network("192.0.2.0/24"),),
        ),
        ("set_real_ip_from unix:;", "set_real_ip_from", ("unix:",)),
        (
            "set_real_ip_from localhost;",
            "set_real_ip_from",
            (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")),
        ),
        ("error_log stderr info;", "error_log", (model.LogTarget("stderr", "info"),)),
        (
            "resolver 192.0.2.53 [2001:db8::53]:5353 valid=10m ipv4=off;",
            "resolver",
            ("192.0.2.53:53", "[2001:db8::53]:5353"),
        ),
        ("resolver off;", "resolver", ()),
    ],
)
def test_directive_gives_typed_value(
    load: Load, directive: str, field: str, expected: object
) -> None:
    assert server_value(load(mail(server=directive)), field) == expected


def test_ssl_conf_command_keeps_its_value_as_written_with_the_configuration_folder(
    load: Load, tmp_path: Path, conf_path: Path
) -> None:
    # Only OpenSSL knows which commands take a file, so the TLS layer resolves the value.
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "tls.conf").write_text("\nssl_conf_command Certificate o.crt;\n")
    server = load(mail(server="include conf.d/tls.conf; ssl_conf_command Options -TLSv1.3;"))
    assert server.servers[0].ssl_conf_command == (
        model.ConfCommand(
            "Certificate",
            "o.crt",
            str(tmp_path),
            model.Source(str(tmp_path / "conf.d/tls.conf"), 2),
        ),
        model.ConfCommand("Options", "-TLSv1.3", str(tmp_path), model.Source(str(conf_path), 7)),
    )


def test_defaults_are_nginx_defaults(load: Load) -> None:
    server = load(mail()).servers[0]
    assert server.timeout == 60.0
    assert server.ssl_protocols == ("TLSv1.2", "TLSv1.3")
    assert server.smtp_auth == ("plain", "login")
    assert server.server_name == socket.gethostname()
    assert server.ssl_session_cache == model.SessionCache()


def test_resolver_options_are_typed(load: Load) -> None:
    server = load(mail(server="resolver 192.0.2.53 valid=10m ipv4=off;")).servers[0]
    assert (server.resolver_valid, server.resolver_ipv4, server.resolver_ipv6) == (
        600.0,
        False,
        True,
    )


def test_auth_http_url_is_parsed_and_resolved(load: Load) -> None:
    url = server_value(load(mail(server="auth_http auth.test;")), "auth_http")
    assert url == model.HttpURL("192.0.2.5", 80, "/", "auth.test", None, "auth.test")


def test_auth_http_over_unix_socket_sends_localhost(load: Load) -> None:
    url = server_value(load(mail(server="auth_http unix:/run/auth.sock:/mail;")), "auth_http")
    assert url == model.HttpURL(
        "", 0, "/mail", "localhost", "/run/auth.sock", "unix:/run/auth.sock:/mail"
    )


def test_proxy_pass_resolves_a_name_to_its_first_address(load: Load) -> None:
    text = "mail { proxy_pass backend.test:143; server { listen 127.0.0.1:143; } }"
    assert server_value(load(text), "proxy_pass") == model.Address("192.0.2.7", 143)


def test_certificate_paths_are_absolute_and_data_is_kept(load: Load, tmp_path: Path) -> None:
    server = load(
        mail(
            server="ssl_certificate c.pem; ssl_certificate 'data:PEM'; "
            "ssl_certificate_key /k.pem; ssl_certificate_key data:K;"
        )
    ).servers[0]
    assert server.ssl_certificate == (str(tmp_path / "c.pem"), "data:PEM")
    assert server.ssl_certificate_key == ("/k.pem", "data:K")


def test_ticket_keys_are_repeatable_paths(load: Load, tmp_path: Path) -> None:
    server = load(mail(server="ssl_session_ticket_key a; ssl_session_ticket_key b;")).servers[0]
    assert server.ssl_session_ticket_key == (str(tmp_path / "a"), str(tmp_path / "b"))


def test_main_defaults(load: Load) -> None:
    main = load("").main
    assert main == model.MainConfig(pid="/run/mailgate.pid", error_log=loader.DEFAULT_ERROR_LOG)


def test_main_directives_are_typed(load: Load, tmp_path: Path) -> None:
    main = load(
        "worker_processes 4; daemon off; master_process off; pid run/m.pid;\n"
        "worker_rlimit_nofile 4096; worker_shutdown_timeout 30s; user mail mail;\n"
        "env TZ; env A=b; error_log logs/e.log warn; error_log stderr;\n"
        "events { worker_connections 100; }"
    ).main
    assert main == model.MainConfig(
        worker_processes=4,
        worker_connections=100,
        worker_rlimit_nofile=4096,
        worker_shutdown_timeout=30.0,
        daemon=False,
        master_process=False,
        pid=str(tmp_path / "run/m.pid"),
        error_log=(
            model.LogTarget(str(tmp_path / "logs/e.log"), "warn"),
            model.LogTarget("stderr", "error"),
        ),
        user=("mail", "mail"),
        env=(("TZ", None), ("A", "b")),
    )


def test_pid_off_disables_the_pid_file(load: Load) -> None:
    assert load("pid off;").main.pid is None


def test_prefix_anchors_relative_pid_and_logs(load: Load) -> None:
    main = load("pid m.pid; error_log e.log;", prefix="/srv/mg").main
    assert (main.pid, main.error_log[0].target) == ("/srv/mg/m.pid", "/srv/mg/e.log")


def test_worker_processes_auto_counts_usable_cpus(load: Load) -> None:
    main = load("worker_processes auto;").main
    assert main.worker_processes_auto
    assert (
        main.worker_processes == len(os.sched_getaffinity(0)) == loader.resolve_worker_processes()
    )


def test_command_line_directives_apply(load: Load) -> None:
    assert load("", extra="daemon off; master_process off;").main.daemon is False


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("1y", 31536000.0), ("1M", 2592000.0), ("2w", 1209600.0), ("1d 2h", 93600.0)],
)
def test_second_valued_times(text: str, seconds: float) -> None:
    assert parse_time(text, msec=False) == seconds


@pytest.mark.parametrize(
    ("text", "msec"),
    [("1y", True), ("1M", True), ("5ms", False), ("1s1m", False), ("s", False), ("", False)],
)
def test_invalid_times(text: str, msec: bool) -> None:
    assert parse_time(text, msec=msec) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("10", 10), ("4k", 4096), ("4K", 4096), ("2m", 2097152), ("1g", 2**30)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "-1", "1.5k", "1t"])
def test_invalid_sizes(text: str) -> None:
    assert parse_size(text) is None
