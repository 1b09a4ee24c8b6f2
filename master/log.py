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

from mailgate.config import loader, model
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


class LogOpenError(Exception):
    """A log file cannot be opened; ``str()`` is nginx's ``open() "path" failed (...)``."""


def open_log_file(path: str, owner: int | None = None) -> int:
    """Open (or create, 0644) ``path`` for appending; raises :class:`LogOpenError`.

    With ``owner`` (the master, as root, on USR1), the file is handed to the workers' user
    the way nginx's ``ngx_reopen_files`` does: chowned to it, the group kept, and made
    readable and writable by its owner. logrotate's ``create 0640 root adm`` then still
    leaves a file the unprivileged workers can reopen; the group keeps its read access.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise LogOpenError(f'open() "{path}" failed ({os_error(err)})') from err
    if owner is not None:
        try:
            info = os.fstat(fd)  # the file opened, not whatever the path names by now
            if info.st_uid != owner:
                os.fchown(fd, owner, -1)
            if info.st_mode & 0o600 != 0o600:
                os.fchmod(fd, (info.st_mode & 0o7777) | 0o600)
        except OSError as err:
            os.close(fd)
            raise LogOpenError(f'chown() "{path}" failed ({os_error(err)})') from err
    return fd


@dataclass(slots=True)
class _Target:
    path: str  # a file path, or STDERR
    level: Level
    fd: int = -1

    def open(self, owner: int | None = None) -> None:
        if self.path == STDERR:
            self.fd = sys.stderr.fileno()
            return
        fd = open_log_file(self.path, owner)
        self.close()
        self.fd = fd

    def close(self) -> None:
        if self.path != STDERR and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


class ErrorLog:
    """nginx's error log: several targets, each with a threshold, reopened on USR1."""

    def __init__(self, targets: Sequence[tuple[str, Level]] = ()) -> None:
        """Open ``targets``; with none, only the startup console echo remains.

        Raises :class:`LogOpenError` (nothing left open) if a file cannot be opened."""
        self._targets = [
            SyslogTarget(path, level) if path.startswith("syslog:") else _Target(path, level)
            for path, level in targets
        ]
        self.console = True
        self._default = STDERR  # the target when no error_log is given (from_config's default)
        # The most verbose threshold of any target: lines above it are dropped unformatted.
        self._most_verbose = max((target.level for target in self._targets), default=Level.EMERG)
        for target in self._targets:
            try:
                target.open()
            except LogOpenError:
                self.close()
                raise

    @classmethod
    def from_config(cls, targets: Sequence[model.LogTarget], default: str = STDERR) -> ErrorLog:
        """The main log for ``error_log`` directives.

        No ``error_log`` at all means the loader's default file, or ``default`` (the ``-e``
        file) at ``error`` if one was given; an empty ``targets`` means ``default``.
        """
        if default != STDERR and tuple(targets) == loader.DEFAULT_ERROR_LOG:
            targets = ()  # the loader's stand-in for "no error_log": -e takes its place
        log = cls.of(targets or (model.LogTarget(default),))
        log._default = default
        return log

    @classmethod
    def of(cls, targets: Sequence[model.LogTarget]) -> ErrorLog:
        """The log writing to exactly ``targets``; raises :class:`LogOpenError`."""
        return cls([(target.target, Level[target.level.upper()]) for target in targets])

    def successor(self, targets: Sequence[model.LogTarget]) -> ErrorLog:
        """Reload, first step: open the new generation's ``error_log`` targets (nginx opens
        the new configuration's logs on HUP). Raises :class:`LogOpenError`; this log is
        untouched either way, so a failed reload keeps logging where it did."""
        new = ErrorLog.from_config(targets, self._default)
        new.console = self.console
        return new

    def adopt(self, new: ErrorLog) -> None:
        """Reload, once committed: write to ``new``'s targets from now on, close ours."""
        old, self._targets = self._targets, new._targets
        self._most_verbose = new._most_verbose
        new._targets = []
        for target in old:
            target.close()

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

    def reopen(self, owner: int | None = None, *, report: bool = True) -> list[str]:
        """Reopen every target (USR1), so rotated logs are let go of; a file that cannot
        be reopened keeps its old descriptor and is reported here (or, without ``report``,
        only returned). ``owner``: see :func:`open_log_file` (the master passes the
        workers' uid)."""
        failures = []
        for target in self._targets:
            try:
                if isinstance(target, SyslogTarget):
                    target.open()
                else:
                    target.open(owner)
            except LogOpenError as err:
                failures.append(str(err))
        if report:
            for failure in failures:
                self.alert(failure)
        return failures

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


class ServerLogs:
    """The error logs of the ``server {}`` blocks that have their own (or their ``mail {}``
    block's), opened by the master and inherited by the workers.

    As nginx sets a connection's log to its server's ``error_log`` chain, these replace the
    main log for the sessions of their server; servers naming the same targets (those that
    inherit the ``mail {}`` level's) share one log. Process messages stay in the main log.
    """

    def __init__(self, servers: Sequence[model.ServerConfig] = ()) -> None:
        """Open every server's targets; raises :class:`LogOpenError` (nothing left open)."""
        self.by_index: dict[int, ErrorLog] = {}  # index into ``servers`` -> its log
        shared: dict[tuple[model.LogTarget, ...], ErrorLog] = {}
        try:
            for index, server in enumerate(servers):
                if not server.error_log:
                    continue  # the main log
                log = shared.get(server.error_log)
                if log is None:
                    log = shared[server.error_log] = ErrorLog.of(server.error_log)
                    log.console = False  # the terminal shows the master's start-up only
                self.by_index[index] = log
        except LogOpenError:
            for log in shared.values():
                log.close()
            raise
        self._logs = list(shared.values())

    def reopen(self, owner: int | None = None) -> list[str]:
        """USR1: reopen every target (see :meth:`ErrorLog.reopen`); returns the failures
        for the main log, which is where nginx reports them too."""
        failures: list[str] = []
        for log in self._logs:
            failures += log.reopen(owner, report=False)
        return failures

    def close(self) -> None:
        for log in self._logs:
            log.close()


def _write(fd: int, data: bytes) -> None:
    # A log that cannot be written must not take the server down (full disk, closed stderr).
    try:
        os.write(fd, data)
    except OSError:
        return
