"""``error_log syslog:``: RFC 3164 datagrams as nginx sends them."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from mailgate.master.log import Level
from mailgate.master.syslog import SyslogTarget, timestamp

# nginx sends the whole error log line after the syslog header, its time stamp included.
ERROR_LOG_STAMP = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d "


@pytest.fixture
def collector() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


def target(port: int, extra: str = "", level: Level = Level.INFO) -> SyslogTarget:
    t = SyslogTarget(f"syslog:server=127.0.0.1:{port}{extra}", level)
    t.open()
    return t


def test_message_is_rfc3164_with_nginx_s_body(collector: socket.socket) -> None:
    t = target(collector.getsockname()[1])
    t.emit(Level.ERROR, "*1 upstream timed out")
    data = collector.recv(4096).decode()
    host = socket.gethostname()
    # local7 (23) * 8 + error (3) = 187
    pattern = rf"<187>\w{{3}} [ \d]\d \d\d:\d\d:\d\d {re.escape(host)} mailgate: {ERROR_LOG_STAMP}"
    assert re.match(pattern + r"\[error\] \d+#0: \*1 upstream timed out$", data), data
    t.close()


def test_facility_severity_tag_and_nohostname(collector: socket.socket) -> None:
    t = target(collector.getsockname()[1], ",facility=mail,severity=crit,tag=gw,nohostname")
    t.emit(Level.INFO, "hello\nworld")
    data = collector.recv(4096).decode()
    header = r"<18>\w{3} [ \d]\d \d\d:\d\d:\d\d gw: "
    assert re.match(header + ERROR_LOG_STAMP + r"\[info\] \d+#0: hello\\x0aworld$", data), data
    t.close()


def test_control_characters_are_sent_escaped(collector: socket.socket) -> None:
    t = target(collector.getsockname()[1], ",nohostname")
    t.emit(Level.ERROR, 'login: "a\x1b[2Jb\rc\x00d\x7f"')
    data = collector.recv(4096)
    assert data.endswith(b'login: "a\\x1b[2Jb\\x0dc\\x00d\\x7f"')
    assert not any(byte < 0x20 or byte == 0x7F for byte in data)
    t.close()


def test_messages_above_the_threshold_are_not_sent(collector: socket.socket) -> None:
    t = target(collector.getsockname()[1], level=Level.WARN)
    t.emit(Level.INFO, "quiet")
    t.emit(Level.WARN, "loud")
    assert collector.recv(4096).decode().endswith("loud")
    t.close()


def test_timestamp_pads_the_day_with_a_space() -> None:
    assert re.fullmatch(r"\w{3} [ \d]\d \d\d:\d\d:\d\d", timestamp(0.0))
