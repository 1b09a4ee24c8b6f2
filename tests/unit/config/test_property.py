"""Whatever the text, loading gives a Config or a ConfigError, never another exception."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.config import loader
from mailgate.config.errors import ConfigError
from mailgate.config.model import Config

# Words that reach the directive tables, the lexer's special characters, and values.
WORDS = st.sampled_from(
    [
        "mail",
        "server",
        "events",
        "http",
        "stream",
        "listen",
        "protocol",
        "imap",
        "pop3",
        "smtp",
        "auth_http",
        "proxy_pass",
        "starttls",
        "on",
        "off",
        "only",
        "ssl",
        "ssl_certificate",
        "ssl_certificate_key",
        "ssl_session_cache",
        "shared:S:1m",
        "builtin:10",
        "timeout",
        "1h30m",
        "500ms",
        "10k",
        "resolver",
        "valid=5s",
        "set_real_ip_from",
        "10.0.0.0/8",
        "unix:",
        "unix:/x",
        "127.0.0.1:143",
        "[::1]:993",
        "993",
        "*:25",
        "so_keepalive=1:2:3",
        "backlog=5",
        "daemon",
        "worker_processes",
        "auto",
        "error_log",
        "stderr",
        "debug",
        "include",
        "pid",
        "env",
        "user",
        "imap_auth",
        "smtp_auth",
        "none",
        "proxy_protocol",
        "v2",
        "127.0.0.1:9000",
        "http://127.0.0.1/a",
        "data:x",
        "engine:e:k",
        "ssl_protocols",
        "TLSv1.3",
        "SSLv3",
        "load_module",
        "pcre_jit",
        "-1",
        "",
        "x",
    ]
)
PUNCTUATION = st.sampled_from([";", "{", "}", " ", "\n", "#", '"', "'", "\\", "$", "(", ")"])
SOUP = st.lists(st.one_of(WORDS, PUNCTUATION), max_size=60).map(" ".join)

PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        result = loader.load(str(path))
    except ConfigError as err:
        assert err.line >= 1 or (err.line == 0 and err.path is not None)
        return
    assert isinstance(result, Config)


@PROPERTY
@given(text=SOUP)
def test_token_soup_loads_or_fails_cleanly(tmp_path: Path, text: str) -> None:
    check(tmp_path / "soup.conf", text.encode())


@PROPERTY
@given(text=SOUP)
def test_soup_inside_a_mail_server_loads_or_fails_cleanly(tmp_path: Path, text: str) -> None:
    # Inside a valid skeleton, so that server-level rows and the merge checks are reached.
    skeleton = f"mail {{ auth_http 127.0.0.1:9; server {{ listen 127.0.0.1:143; {text} }} }}"
    check(tmp_path / "server.conf", skeleton.encode())


@PROPERTY
@given(text=st.text(max_size=300))
def test_random_text_loads_or_fails_cleanly(tmp_path: Path, text: str) -> None:
    check(tmp_path / "text.conf", text.encode("utf-8", "surrogatepass"))


@PROPERTY
@given(data=st.binary(max_size=300))
def test_random_bytes_load_or_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    check(tmp_path / "bytes.conf", data)


@PROPERTY
@given(text=SOUP)
def test_command_line_soup_loads_or_fails_cleanly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.conf"
    path.write_bytes(b"")
    try:
        loader.load(str(path), extra=text)
    except ConfigError:
        return
