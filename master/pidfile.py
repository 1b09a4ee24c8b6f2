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
