"""Control characters never reach the error log or syslog raw: they are written as ``\\xHH``.

Whoever built the message (a login in the session's log context, a PROXY header fragment, an
auth server's error text), the sinks escape it, so a log line stays one line of text.
"""

from __future__ import annotations

from pathlib import Path

from mailgate.master.log import ErrorLog, Level, console_line, format_line
from mailgate.worker.sansio import escape_controls, log_text

# The syslog datagram's escaping is checked in test_syslog.py.
HOSTILE = "a\x1b[2Jb\rc\nd\x00e\x7ff\tg"
ESCAPED = "a\\x1b[2Jb\\x0dc\\x0ad\\x00e\\x7ff\\x09g"


def test_every_c0_control_and_del_is_escaped() -> None:
    controls = "".join(map(chr, [*range(0x20), 0x7F]))
    assert escape_controls(controls) == "".join(f"\\x{c:02x}" for c in [*range(0x20), 0x7F])


def test_c1_controls_are_escaped_as_their_utf8_bytes() -> None:
    assert escape_controls("\x9b31m") == "\\xc2\\x9b31m"  # CSI, for terminals that obey C1


def test_printable_text_and_utf8_are_kept() -> None:
    text = 'login: "josé" \\ ~ ü 中'
    assert escape_controls(text) == text


def test_log_text_escapes_controls_and_undecodable_bytes_alike() -> None:
    assert log_text(b"\x1b[31m\xff\r\n") == "\\x1b[31m\\xff\\x0d\\x0a"


def test_error_log_line_escapes_controls() -> None:
    line = format_line(0.0, Level.ERROR, 1, HOSTILE)
    assert line.endswith(f"1#0: {ESCAPED}\n")


def test_console_line_escapes_controls() -> None:
    assert console_line(Level.EMERG, HOSTILE) == f"mailgate: [emerg] {ESCAPED}\n"


def test_error_log_file_gets_no_raw_control_bytes(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    log = ErrorLog([(str(path), Level.INFO)])
    log.console = False
    log.info(HOSTILE)
    log.close()
    data = path.read_bytes()
    assert data.endswith(ESCAPED.encode() + b"\n")
    assert not any(byte < 0x20 or byte == 0x7F for byte in data[:-1])
