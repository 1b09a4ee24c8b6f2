"""The access log's two formats, its escaping, and its files (open, reopen, shared)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from pathlib import Path

from mailgate.config import model
from mailgate.worker.observe.access_log import (
    AccessLogs,
    CloseReason,
    LogFile,
    Resumed,
    SessionRecord,
    escape,
    format_json,
    format_main,
)

RECORD = SessionRecord(
    start=1_714_564_800.0,
    client_addr="192.0.2.7",
    client_port=51234,
    server="0.0.0.0:993",
    protocol="imap",
    tls_version="TLSv1.3",
    cipher="TLS_AES_256_GCM_SHA384",
    sni="mail.example.com",
    resumed=Resumed.TICKET,
    handshake=0.0042,
    login=b"alice",
    auth="ok",
    upstream="192.0.2.20:143",
    bytes_in=1234,
    bytes_out=56789,
    duration=12.3456,
    reason=CloseReason.PROXIED,
)
PLAIN = SessionRecord(
    start=1_714_564_800.0,
    client_addr="198.51.100.1",
    client_port=40000,
    server="127.0.0.1:143",
    protocol="imap",
)


class Errors:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def error(self, message: str) -> None:
        self.lines.append(message)


def test_main_format_holds_every_field_in_order() -> None:
    line = format_main(RECORD)
    assert line.endswith("\n") and line.count("\n") == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d client=192\.0\.2\.7:51234 "
        r"server=0\.0\.0\.0:993 protocol=imap tls=TLSv1\.3 cipher=TLS_AES_256_GCM_SHA384 "
        r"sni=mail\.example\.com resumed=ticket handshake=0\.004 login=\"alice\" auth=ok "
        r"upstream=192\.0\.2\.20:143 bytes_in=1234 bytes_out=56789 duration=12\.346 "
        r"reason=proxied\n",
        line,
    )


def test_main_format_marks_absent_values_with_a_dash() -> None:
    line = format_main(PLAIN)
    for field in ("tls", "cipher", "sni", "resumed", "handshake", "login", "auth", "upstream"):
        assert f" {field}=- " in line
    assert line.endswith(" reason=shutdown\n")


def test_json_format_parses_with_typed_values() -> None:
    data = json.loads(format_json(RECORD))
    assert data["client_addr"] == "192.0.2.7"
    assert data["client_port"] == 51234
    assert data["resumed"] == "ticket"
    assert data["handshake_time"] == 0.0042
    assert data["login"] == "alice"
    assert data["bytes_out"] == 56789
    assert data["reason"] == "proxied"
    assert set(data) == {
        "time",
        "client_addr",
        "client_port",
        "server",
        "protocol",
        "tls_version",
        "cipher",
        "sni",
        "resumed",
        "handshake_time",
        "login",
        "auth",
        "upstream",
        "bytes_in",
        "bytes_out",
        "duration",
        "reason",
    }


def test_json_format_uses_null_for_absent_values() -> None:
    data = json.loads(format_json(PLAIN))
    assert data["tls_version"] is None and data["login"] is None and data["resumed"] is None


def test_a_hostile_login_cannot_break_the_line_or_forge_a_field() -> None:
    record = dataclasses.replace(RECORD, login=b'eve" auth=ok\r\nfake', sni="a b\nc")
    line = format_main(record)
    assert line.count("\n") == 1
    assert 'login="eve\\x22\\x20auth=ok\\x0d\\x0afake"' in line
    assert "sni=a\\x20b\\x0ac" in line
    parsed = json.loads(format_json(record))
    assert parsed["login"] == 'eve" auth=ok\r\nfake'
    assert format_json(record).count("\n") == 1


def test_escape_keeps_printable_ascii_only() -> None:
    assert escape(b"j\xc3\xb6rg\\") == "j\\xc3\\xb6rg\\x5c"
    assert escape("user@example.com") == "user@example.com"


def test_the_record_has_no_field_for_a_password() -> None:
    names = {f.name for f in dataclasses.fields(SessionRecord)}
    assert not {name for name in names if "pass" in name or "secret" in name}


def servers(*logs: tuple[model.AccessLog, ...]) -> list[model.ServerConfig]:
    listen = model.Listen(socket.AF_INET, "127.0.0.1", 143, model.Source("t.conf", 3))
    return [
        model.ServerConfig(
            source=model.Source("t.conf", 2),
            listens=(listen,),
            protocol=model.Protocol.IMAP,
            access_log=log,
        )
        for log in logs
    ]


def test_servers_share_one_file_object_per_path(tmp_path: Path) -> None:
    path = str(tmp_path / "access.log")
    json_path = str(tmp_path / "access.json")
    first, second, silent = servers(
        (model.AccessLog(path),),
        (model.AccessLog(path), model.AccessLog(json_path, model.AccessLogFormat.JSON)),
        (),
    )
    logs = AccessLogs([first, second, silent], Errors())
    assert logs.enabled(first) and not logs.enabled(silent)
    logs.write(first, RECORD)
    logs.write(second, PLAIN)
    logs.write(silent, RECORD)
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 2 and "client=192.0.2.7" in lines[0] and "198.51.100.1" in lines[1]
    assert json.loads(Path(json_path).read_text())["client_addr"] == "198.51.100.1"
    logs.close()


def test_reopen_follows_a_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    (server,) = servers((model.AccessLog(str(path)),))
    logs = AccessLogs([server], Errors())
    logs.write(server, RECORD)
    os.rename(path, tmp_path / "access.log.1")
    logs.write(server, RECORD)  # still the old file until reopened
    logs.reopen()
    logs.write(server, PLAIN)
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 2
    assert "198.51.100.1" in path.read_text()
    logs.close()


def test_an_unwritable_file_is_reported_once(tmp_path: Path) -> None:
    errors = Errors()
    file = LogFile(str(tmp_path / "missing" / "access.log"), errors)
    file.write("one\n")
    file.write("two\n")
    assert len(errors.lines) == 1
    assert errors.lines[0].startswith(f'open() "{tmp_path}/missing/access.log" failed (2: ')
