"""The error log, in nginx's line format: ``2024/05/01 12:00:00 [notice] 1234#0: message``.

Each target (a file or ``stderr``) has its own threshold level. Lines are written with one
``write()`` on an ``O_APPEND`` descriptor so that lines from the master and every worker never
interleave inside a line. While the master is starting up (``console`` on), messages at ``warn``
and above are also echoed to the terminal as ``mailgate: [emerg] ...``, as nginx does before it
detaches, unless a target is already stderr.

This module never sees secrets: protocol code sanitizes AUTH/LOGIN lines before logging them.
"""

from __future__ import annotations

import enum
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mailgate.config import model
from mailgate.master.syslog import SyslogTarget
from mailgate.worker.sansio import escape_controls

STDERR = "stderr"


class Level(enum.IntEnum):
    """nginx's levels; a lower number is more severe."""

    EMERG = 1
    ALERT = 2
    CRIT = 3
    ERROR = 4
    WARN = 5
    NOTICE = 6
    INFO = 7
    DEBUG = 8

    @property
    def label(self) -> str:
        return self.name.lower()


def os_error(err: OSError) -> str:
    """nginx's ``2: No such file or directory`` for an OS error."""
    return f"{err.errno}: {err.strerror}"


def format_line(when: float, level: Level, pid: int, message: str) -> str:
    """One error log line; control characters in ``message`` (newlines, a client's ESC...)
    are escaped as ``\\xHH`` so that a line stays one line and text."""
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(when))
    return f"{stamp} [{level.label}] {pid}#0: {escape_controls(message)}\n"


def console_line(level: Level, message: str) -> str:
    """A startup message for the terminal: ``mailgate: [emerg] message``."""
    return f"mailgate: [{level.label}] {escape_controls(message)}\n"


@dataclass(slots=True)
class _Target:
    path: str  # a file path, or STDERR
    level: Level
    fd: int = -1

    def open(self) -> None:
        if self.path == STDERR:
            self.fd = sys.stderr.fileno()
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.close()
        self.fd = fd

    def close(self) -> None:
        if self.path != STDERR and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


class ErrorLog:
    """nginx's error log: several targets, each with a threshold, reopened on USR1."""

    def __init__(self, targets: Sequence[tuple[str, Level]] = ()) -> None:
        """Open ``targets``; with none, only the startup console echo remains."""
        self._targets = [
            SyslogTarget(path, level) if path.startswith("syslog:") else _Target(path, level)
            for path, level in targets
        ]
        self.console = True
        self._default = STDERR  # the target when no error_log is given (from_config's default)
        # The most verbose threshold of any target: lines above it are dropped unformatted.
        self._most_verbose = max((target.level for target in self._targets), default=Level.EMERG)
        for target in self._targets:
            target.open()

    @classmethod
    def from_config(
        cls, targets: Sequence[model.LogTarget], default: str = STDERR
    ) -> tuple[ErrorLog, list[str]]:
        """The log for ``error_log`` directives, and warnings about targets not supported yet.

        No ``error_log`` at all means ``default`` (the ``-e`` file, else stderr) at ``error``.
        ``syslog:`` and ``memory:`` targets fall back to stderr for now.
        """
        chosen: list[tuple[str, Level]] = []
        warnings: list[str] = []
        for target in targets or (model.LogTarget(default),):
            path = target.target
            if path.startswith("memory:"):
                kind = path.split(":", 1)[0]
                warnings.append(f'error_log "{kind}:" is not supported yet, logging to stderr')
                path = STDERR
            chosen.append((path, Level[target.level.upper()]))
        log = cls(chosen)
        log._default = default
        return log, warnings

    def retarget(self, targets: Sequence[model.LogTarget]) -> list[str]:
        """Reload: write to the new generation's ``error_log`` targets from now on (nginx
        opens the new configuration's logs on HUP); returns the same warnings as
        :meth:`from_config`."""
        new, warnings = ErrorLog.from_config(targets, self._default)
        old, self._targets = self._targets, new._targets
        self._most_verbose = new._most_verbose
        for target in old:
            target.close()
        return warnings

    @property
    def has_stderr(self) -> bool:
        return any(target.path == STDERR for target in self._targets)

    def enabled(self, level: Level) -> bool:
        """Whether a line at ``level`` would be written anywhere (callers skip building it).

        Constant for a generation of workers: targets change only in the master on reload,
        before the new workers fork; the startup console echo only adds ``warn`` and above."""
        return level <= self._most_verbose or level <= Level.WARN

    def log(self, level: Level, message: str) -> None:
        """Write ``message`` to every target whose threshold admits ``level``."""
        if level > self._most_verbose and not (self.console and level <= Level.WARN):
            return  # the common case for info lines at the default level: format nothing
        line = format_line(time.time(), level, os.getpid(), message).encode("utf-8", "replace")
        for target in self._targets:
            if isinstance(target, SyslogTarget):
                target.emit(level, message)
            elif level <= target.level and target.fd >= 0:
                _write(target.fd, line)
        if self.console and level <= Level.WARN and not self.has_stderr:
            _write(sys.stderr.fileno(), console_line(level, message).encode("utf-8", "replace"))

    def reopen(self) -> None:
        """Reopen every file target (USR1), so rotated logs are let go of."""
        for target in self._targets:
            try:
                target.open()
            except OSError as err:
                self.alert(f'open() "{target.path}" failed ({os_error(err)})')

    def close(self) -> None:
        """Close the file targets."""
        for target in self._targets:
            target.close()

    def emerg(self, message: str) -> None:
        self.log(Level.EMERG, message)

    def alert(self, message: str) -> None:
        self.log(Level.ALERT, message)

    def crit(self, message: str) -> None:
        self.log(Level.CRIT, message)

    def error(self, message: str) -> None:
        self.log(Level.ERROR, message)

    def warn(self, message: str) -> None:
        self.log(Level.WARN, message)

    def notice(self, message: str) -> None:
        self.log(Level.NOTICE, message)

    def info(self, message: str) -> None:
        self.log(Level.INFO, message)

    def debug(self, message: str) -> None:
        self.log(Level.DEBUG, message)


def _write(fd: int, data: bytes) -> None:
    # A log that cannot be written must not take the server down (full disk, closed stderr).
    try:
        os.write(fd, data)
    except OSError:
        return
