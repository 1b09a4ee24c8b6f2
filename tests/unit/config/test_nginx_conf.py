"""An admin's whole nginx.conf loads: non-mail parts are skipped with warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config.errors import ConfigError
from tests.unit.config.conftest import Load, mail

DEBIAN_NGINX_CONF = """
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
include /nonexistent/modules-enabled/*.conf;

events {
    worker_connections 768;
    # multi_accept on;
}

http {
    sendfile on;
    types { text/html html; }
    log_format main '$remote_addr - "$request"';
    server {
        listen 80 default_server;
        location ~ \\.php$ { if ($request_method = POST) { return 405; } }
    }
    include /etc/nginx/sites-enabled/*;
}
"""


def test_debian_default_nginx_conf_loads(load: Load) -> None:
    config = load(DEBIAN_NGINX_CONF + mail())
    assert config.main.worker_connections == 768
    assert config.main.pid == "/run/nginx.pid"
    assert len(config.servers) == 1


def test_http_block_is_skipped_with_a_warning(load: Load, conf_path: Path) -> None:
    config = load("\nhttp {\n server { listen 80; }\n}\n")
    assert config.warnings == (f'"http" block is ignored by mailgate in {conf_path}:2',)


def test_stream_block_is_skipped_with_a_warning(load: Load, conf_path: Path) -> None:
    config = load("stream { upstream u { server 127.0.0.1:1; } }")
    assert config.warnings == (f'"stream" block is ignored by mailgate in {conf_path}:1',)


def test_unbalanced_http_block_is_an_error(load: Load) -> None:
    with pytest.raises(ConfigError, match='unexpected end of file, expecting "}"'):
        load("http { server {")


def test_syntax_error_inside_http_block_is_reported(load: Load) -> None:
    with pytest.raises(ConfigError, match='unexpected "}"'):
        load("http { a b }")


def test_load_module_of_mail_is_skipped_with_a_warning(load: Load) -> None:
    config = load("load_module modules/ngx_mail_module.so;")
    assert config.warnings[0].startswith('"load_module" of the mail module is ignored')


def test_load_module_of_other_module_is_skipped_silently(load: Load) -> None:
    assert load("load_module modules/ngx_http_geoip_module.so;").warnings == ()


@pytest.mark.parametrize(
    "directive",
    [
        "worker_cpu_affinity auto;",
        "worker_priority -5;",
        "pcre_jit on;",
        "thread_pool default threads=32;",
        "lock_file logs/nginx.lock;",
        "timer_resolution 100ms;",
        "ssl_engine device;",
        "working_directory /tmp;",
        "worker_rlimit_core 500m;",
    ],
)
def test_main_tuning_directive_is_ignored_with_a_warning(
    load: Load, conf_path: Path, directive: str
) -> None:
    name = directive.split(maxsplit=1)[0]
    assert load(directive).warnings == (
        f'"{name}" directive is ignored by mailgate in {conf_path}:1',
    )


def test_events_tuning_directives_are_accepted_silently(load: Load) -> None:
    text = "events { use epoll; multi_accept on; accept_mutex off; accept_mutex_delay 1ms; }"
    assert load(text).warnings == ()


def test_ignored_flag_directive_still_checks_its_value(load: Load) -> None:
    with pytest.raises(ConfigError, match='it must be "on" or "off"'):
        load("pcre_jit yes;")


def test_multi_accept_is_off_unless_turned_on(load: Load) -> None:
    assert load("events { }").main.multi_accept is False
    assert load("events { multi_accept on; }").main.multi_accept is True


def test_multi_accept_takes_only_on_or_off(load: Load) -> None:
    with pytest.raises(ConfigError, match='it must be "on" or "off"'):
        load("events { multi_accept yes; }")
