"""Folders the servers' unprivileged users can reach, ownership, and log tails."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

NOBODY_UID = 65534  # the mail user of every test account, and of Postfix's virtual delivery
NOGROUP_GID = 65534


def reachable_by_others(path: Path) -> bool:
    """True if every folder from / down to `path` lets other users traverse it."""
    path = path.resolve()
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])


@contextlib.contextmanager
def reachable_dir(tmpdir: Path, name: str) -> Iterator[Path]:
    """Yield `tmpdir/name` as a folder that users `nobody`, `postfix` and `dovecot` can reach.

    The servers' unprivileged processes open sockets, queues and maildirs in it, but pytest's
    temporary folders are 0700 root (/tmp/pytest-of-root/...). In that case the real folder is
    made in /tmp (short paths also keep unix socket names under 108 bytes), `tmpdir/name` is a
    symlink to it, and both are removed at exit. A reachable `tmpdir` (the demo's) is used as is.
    """
    tmpdir.mkdir(parents=True, exist_ok=True)
    link = tmpdir / name
    if reachable_by_others(tmpdir):
        link.mkdir(exist_ok=True)
        link.chmod(0o755)
        yield link
        return
    real = Path(tempfile.mkdtemp(prefix=f"mailgate-{name}-", dir="/tmp"))
    real.chmod(0o755)
    link.symlink_to(real)
    try:
        yield real
    finally:
        link.unlink()
        shutil.rmtree(real, ignore_errors=True)


def chown_nobody(*paths: Path) -> None:
    """Give paths to nobody:nogroup, the mail user of every test account."""
    for path in paths:
        os.chown(path, NOBODY_UID, NOGROUP_GID)


def log_tail(path: Path, lines: int = 30) -> str:
    """Last lines of a server log, for error messages when a start fails."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log at {path}: {exc})"
