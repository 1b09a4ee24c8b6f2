"""The ``pid`` file: written by the master after binding, read by ``mailgate -s``."""

from __future__ import annotations

import contextlib
import os

from mailgate.master.log import os_error


class PidFileError(Exception):
    """Reading the pid file failed; ``str()`` is nginx's wording (logged at ``error``)."""


def write(path: str, pid: int) -> None:
    """Write ``pid`` and a newline to ``path``, replacing any stale content."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)


def remove(path: str) -> None:
    """Remove the pid file; a file already gone is not an error at exit."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read(path: str) -> int:
    """The pid in ``path``, or :class:`PidFileError` with nginx's message."""
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except OSError as err:
        raise PidFileError(f'open() "{path}" failed ({os_error(err)})') from err
    text = raw.decode("ascii", "replace").rstrip("\r\n \t")
    if not text.isdigit() or int(text) == 0:
        raise PidFileError(f'invalid PID number "{text}" in "{path}"')
    return int(text)


OLDBIN = ".oldbin"  # nginx's NGX_OLDPID_EXT


class PidFile:
    """The master's own pid file, which moves aside to ``<path>.oldbin`` during an upgrade.

    The old master renames its file before it starts the new binary, so the new master can
    write ``path``; if the new master exits, the old one takes ``path`` back. ``remove()`` at
    exit deletes whichever name this master holds, never the new master's file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.current = path

    @property
    def oldbin(self) -> str:
        return self.path + OLDBIN

    def write(self, pid: int) -> None:
        """Write ``pid`` to ``path``; raises ``OSError``."""
        write(self.path, pid)
        self.current = self.path

    def move_aside(self) -> None:
        """Rename ``path`` to ``path.oldbin`` (USR2); raises ``OSError``."""
        os.rename(self.path, self.oldbin)
        self.current = self.oldbin

    def move_back(self) -> None:
        """Rename ``path.oldbin`` back to ``path`` (the new binary exited); raises ``OSError``."""
        os.rename(self.oldbin, self.path)
        self.current = self.path

    def move_to(self, path: str, pid: int) -> None:
        """A reload named another ``pid`` path: write the new file, then drop the old one."""
        old = self.current
        write(path, pid)
        self.path = self.current = path
        if old != path:
            remove(old)

    def take_back(self) -> str | None:
        """The new binary exited: hold ``path`` again. Returns the error to log, if any."""
        if self.current == self.path:
            return None
        try:
            self.move_back()
        except OSError as err:
            return f'rename() "{self.oldbin}" back to "{self.path}" failed ({os_error(err)})'
        return None

    def follow(self, path: str | None, pid: int) -> str | None:
        """A reload that names another pid file moves it, as nginx does. Returns the error
        to log, if any."""
        if path is None or path == self.path:
            return None
        try:
            self.move_to(path, pid)
        except OSError as err:
            return f'open() "{path}" failed ({os_error(err)})'
        return None

    def remove(self) -> None:
        """Delete the file this master holds now (``path``, or ``path.oldbin`` mid-upgrade)."""
        remove(self.current)
