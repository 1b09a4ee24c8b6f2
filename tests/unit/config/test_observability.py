"""``access_log``, ``metrics_listen`` and ``error_log syslog:``: typed values and nginx's errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailgate.config import logs, model
from mailgate.config.errors import ConfigError
from tests.unit.config.conftest import Load, mail

MAIN = model.AccessLogFormat.MAIN
JSON = model.AccessLogFormat.JSON


def test_access_log_is_off_by_default(load: Load) -> None:
    assert load(mail()).servers[0].access_log == ()


def test_access_log_defaults_to_main_format_relative_to_prefix(load: Load, tmp_path: Path) -> None:
    config = load(mail(server="access_log logs/access.log;"))
    assert config.servers[0].access_log == (model.AccessLog(str(tmp_path / "logs/access.log")),)


def test_access_log_json_format_and_several_files(load: Load) -> None:
    config = load(mail(server="access_log /a.log; access_log /b.log json;"))
    assert config.servers[0].access_log == (
        model.AccessLog("/a.log", MAIN),
        model.AccessLog("/b.log", JSON),
    )


def test_server_access_log_replaces_the_mail_level(load: Load) -> None:
    config = load(mail(server="access_log /srv.log json;", mail_level="access_log /mail.log;"))
    assert config.servers[0].access_log == (model.AccessLog("/srv.log", JSON),)


def test_server_inherits_the_mail_level_access_log(load: Load) -> None:
    config = load(mail(mail_level="access_log /mail.log json;"))
    assert config.servers[0].access_log == (model.AccessLog("/mail.log", JSON),)


def test_access_log_off_in_a_server_turns_the_inherited_one_off(load: Load) -> None:
    config = load(mail(server="access_log off;", mail_level="access_log /mail.log;"))
    assert config.servers[0].access_log == ()


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ("access_log /a.log combined;", 'unknown log format "combined"'),
        ("access_log off json;", 'invalid parameter "json"'),
        ("access_log off; access_log /a.log;", '"access_log off" cannot be combined'),
        ("access_log /a.log; access_log off;", '"access_log off" cannot be combined'),
        ("access_log /a.log; access_log /a.log json;", 'duplicate "access_log" file "/a.log"'),
        ("access_log syslog:server=127.0.0.1;", '"access_log" to syslog is not supported'),
        ("access_log /a.log main buffer=32k;", 'invalid number of arguments in "access_log"'),
    ],
)
def test_access_log_errors_name_the_line(
    load: Load, conf_path: Path, directive: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(mail(server=directive))
    assert message in str(err.value)
    assert str(err.value).endswith(f" in {conf_path}:7")


def test_access_log_is_not_allowed_at_main_level(load: Load, conf_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=f'"access_log" directive is not allowed here in {conf_path}:1'
    ):
        load("access_log /a.log;\n" + mail())


def test_metrics_listen_is_off_by_default(load: Load) -> None:
    assert load(mail()).main.metrics_listen is None


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("127.0.0.1:9145", (socket.AF_INET, "127.0.0.1", 9145, "127.0.0.1:9145")),
        ("9145", (socket.AF_INET, "0.0.0.0", 9145, "0.0.0.0:9145")),
        ("[::1]:9145", (socket.AF_INET6, "::1", 9145, "[::1]:9145")),
        ("localhost:9145", (socket.AF_INET, "127.0.0.1", 9145, "127.0.0.1:9145")),
    ],
)
def test_metrics_listen_addresses(load: Load, word: str, expected: tuple[object, ...]) -> None:
    listen = load(f"metrics_listen {word};\n" + mail()).main.metrics_listen
    assert listen is not None
    assert (listen.family, listen.host, listen.port, listen.text) == expected
    assert listen.source.line == 1


def test_metrics_listen_off(load: Load) -> None:
    assert load("metrics_listen off;\n" + mail()).main.metrics_listen is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics_listen 127.0.0.1;", 'no port in "127.0.0.1" of the "metrics_listen" directive'),
        ("metrics_listen unix:/tmp/m.sock;", "unix sockets are not supported"),
        ("metrics_listen 127.0.0.1:99999;", 'invalid port in "127.0.0.1:99999"'),
        (
            "metrics_listen 1.2.3.4:1; metrics_listen 1.2.3.4:2;",
            '"metrics_listen" directive is duplicate',
        ),
    ],
)
def test_metrics_listen_errors(load: Load, conf_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(text + "\n" + mail())
    assert message in str(err.value)
    assert str(err.value).endswith(f" in {conf_path}:1")


def test_metrics_listen_is_main_level_only(load: Load, conf_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not allowed here"):
        load(mail(mail_level="metrics_listen 9145;"))


# -- error_log syslog: ----------------------------------------------------------------------


def test_syslog_defaults_are_nginx_s() -> None:
    spec = logs.parse_syslog("syslog:server=192.0.2.1")
    assert spec == model.Syslog(socket.AF_INET, "192.0.2.1", 514)
    assert (spec.facility, spec.severity, spec.tag, spec.hostname) == (23, None, "mailgate", True)


def test_syslog_every_parameter() -> None:
    spec = logs.parse_syslog(
        "syslog:server=[::1]:5514,facility=mail,severity=warn,tag=gw_1,nohostname"
    )
    assert spec == model.Syslog(socket.AF_INET6, "::1", 5514, 2, 4, "gw_1", False)


def test_syslog_unix_server() -> None:
    spec = logs.parse_syslog("syslog:server=unix:/dev/log")
    assert (spec.family, spec.host) == (socket.AF_UNIX, "/dev/log")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("syslog:facility=mail", "no syslog server specified"),
        ("syslog:server=1.2.3.4,facility=nope", 'unknown syslog facility "nope"'),
        ("syslog:server=1.2.3.4,severity=loud", 'unknown syslog severity "loud"'),
        ("syslog:server=1.2.3.4,tag=a-b", 'syslog "tag" only allows alphanumeric'),
        ("syslog:server=1.2.3.4,tag=" + "a" * 33, "syslog tag length exceeds 32"),
        ("syslog:server=1.2.3.4,colour=red", 'unknown syslog parameter "colour=red"'),
        ("syslog:server=1.2.3.4,server=1.2.3.5", 'duplicate syslog "server"'),
        ("syslog:server=1.2.3.4:0", "invalid port"),
    ],
)
def test_syslog_errors_at_load(load: Load, conf_path: Path, target: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(f"error_log {target};\n" + mail())
    assert message in str(err.value)
    assert str(err.value).endswith(f" in {conf_path}:1")


def test_syslog_target_is_kept_as_written(load: Load) -> None:
    config = load("error_log syslog:server=127.0.0.1:5514,tag=gw info;\n" + mail())
    assert config.main.error_log == (
        model.LogTarget("syslog:server=127.0.0.1:5514,tag=gw", "info"),
    )


# -- error_log in mail and server: ---------------------------------------------------------


def test_server_error_logs_form_a_chain_in_their_order(load: Load) -> None:
    config = load(mail(server="error_log a.log debug; error_log stderr info; error_log b.log;"))
    assert [(t.target.rsplit("/", 1)[-1], t.level) for t in config.servers[0].error_log] == [
        ("a.log", "debug"),
        ("stderr", "info"),
        ("b.log", "error"),
    ]


def test_a_server_without_error_log_takes_the_mail_level_s(load: Load) -> None:
    config = load(mail(mail_level="error_log stderr notice;"))
    assert config.servers[0].error_log == (model.LogTarget("stderr", "notice"),)


def test_a_server_s_own_error_log_replaces_the_mail_level_s(load: Load) -> None:
    config = load(mail(server="error_log stderr info;", mail_level="error_log m.log;"))
    assert config.servers[0].error_log == (model.LogTarget("stderr", "info"),)


@pytest.mark.parametrize(
    "text",
    [
        "error_log memory:32m;\n" + mail(),
        mail(mail_level="error_log memory:32m debug;"),
        mail(server="error_log memory:nonsense;"),
    ],
)
def test_a_memory_error_log_is_refused_as_by_nginx_without_debug(
    load: Load, conf_path: Path, text: str
) -> None:
    # nginx without --with-debug: "nginx was built without debug support", size unread.
    with pytest.raises(ConfigError) as err:
        load(text)
    line = next(number for number, x in enumerate(text.splitlines(), 1) if "memory:" in x)
    assert str(err.value) == f"mailgate was built without debug support in {conf_path}:{line}"
