"""``error_log syslog:server=...``: RFC 3164 messages over UDP (or a unix datagram socket).

The message is nginx's: the syslog header ``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG: `` and then the
whole error log line, its own time stamp included (``yyyy/mm/dd hh:mm:ss [level] pid#0: text``,
as ``ngx_syslog_writer`` sends it), with the HOSTNAME left out under ``nohostname``. The
severity is the message's level unless the target names one; the facility defaults to
``local7`` and the tag to ``mailgate``. Sending never blocks and never fails the caller: a
lost datagram is a lost log line, as with nginx.

The target has the shape of ``master.log``'s file targets (``path``, ``level``, ``open``,
``close``) plus :meth:`SyslogTarget.emit`, so the error log can hold both kinds in one list.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from mailgate.config import logs, model
from mailgate.worker.sansio import escape_controls

MAX_MESSAGE = 2048  # nginx's NGX_MAX_ERROR_STR: longer lines are cut
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def timestamp(when: float) -> str:
    """RFC 3164's ``Mmm dd hh:mm:ss`` (day padded with a space), in local time."""
    t = time.localtime(when)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def format_message(
    spec: model.Syslog, severity: int, level_label: str, text: str, *, pid: int, when: float
) -> bytes:
    """One datagram; ``severity`` is the message's (RFC 5424 numbering, 0 emerg .. 7 debug)."""
    pri = spec.facility * 8 + (spec.severity if spec.severity is not None else severity)
    host = f" {socket.gethostname()}" if spec.hostname else ""
    text = escape_controls(text)  # as the error log file: one line, no terminal control
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(when))
    line = f"<{pri}>{timestamp(when)}{host} {spec.tag}: {stamp} [{level_label}] {pid}#0: {text}"
    return line.encode("utf-8", "replace")[:MAX_MESSAGE]


@dataclass(slots=True)
class SyslogTarget:
    """One ``error_log syslog:...`` target; ``level`` is its threshold (a ``log.Level``)."""

    path: str  # the target as written, "syslog:server=..."
    level: Any
    spec: model.Syslog = field(init=False)
    sock: socket.socket | None = None
    fd: int = -1  # never a file: the error log skips targets without a descriptor

    def __post_init__(self) -> None:
        self.spec = logs.parse_syslog(self.path)  # checked at load: cannot fail here

    def open(self) -> None:
        """(Re)create the socket: on USR1 a restarted syslog daemon is found again."""
        self.close()
        family = self.spec.family
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            target: Any = (
                self.spec.host
                if family == socket.AF_UNIX
                else (
                    self.spec.host,
                    self.spec.port,
                )
            )
            sock.connect(target)
        except OSError:
            sock.close()
            return  # nothing listens now; the next reopen tries again
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def emit(self, level: Any, message: str) -> None:
        """Send ``message`` logged at ``level`` if the threshold admits it."""
        if self.sock is None or level > self.level:
            return
        data = format_message(
            self.spec, int(level) - 1, level.label, message, pid=os.getpid(), when=time.time()
        )
        try:
            self.sock.send(data)
        except OSError:
            return  # a full buffer or an absent daemon must not stop the server
