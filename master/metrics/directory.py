"""The multiprocess folder every mailgate process writes its metrics into.

:func:`prepare_environment` sets ``PROMETHEUS_MULTIPROC_DIR`` before anything imports
prometheus_client, only when ``metrics_listen`` is set: a fresh private folder (``mkdtemp``,
0700, given to the workers' user), or the old master's on a binary upgrade. With metrics off
nothing is created. :func:`release_directory` removes it at a cold stop. :func:`mark_dead` is
called for every child the master reaps, so the live gauges of dead processes stop counting.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import MutableMapping

from mailgate.config import model
from mailgate.master.metrics import MetricsError

ENV = "PROMETHEUS_MULTIPROC_DIR"
UPGRADE_ENV = "MAILGATE_FDS"  # present: started by USR2 with the old master's sockets
PREFIX = "mailgate-metrics-"  # mkdtemp's prefix: a folder of ours, removed at a cold stop
_created: str | None = None  # the folder this master made (or took over from its old master)


def prepare_environment(
    listen: model.MetricsListen | None,
    owner: int | None = None,
    environ: MutableMapping[str, str] = os.environ,
) -> str | None:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` when metrics are on; returns the folder, or None.

    Must run before the first ``import prometheus_client`` in the master (the value class is
    chosen at import). With metrics off nothing is created and the variable is removed: every
    process counts in memory. With metrics on the folder is a fresh ``mkdtemp`` (0700, a
    random name nobody can take first), given to ``owner``, the workers' user, who writes
    there. A folder already named in the environment is kept if it is private: the old
    master's on a binary upgrade (``MAILGATE_FDS`` set; its workers still write there), or
    one the admin chose (its old files are wiped on a cold start). Raises ``MetricsError``.
    """
    global _created
    if "prometheus_client" in sys.modules:
        raise MetricsError(
            "prometheus_client was imported before the metrics directory was set: "
            "metrics would not be shared between processes"
        )
    if listen is None:
        environ.pop(ENV, None)
        return None
    path = environ.get(ENV)
    if path:
        _check_private(path, owner)
        upgrade = UPGRADE_ENV in environ
        if upgrade and _is_ours(path):
            _created = path  # the old master's folder: ours to remove once it has gone
        if not upgrade and not _live_writers(path):
            _wipe(path)
    else:
        try:
            path = _created = tempfile.mkdtemp(prefix=PREFIX)
        except OSError as err:
            raise MetricsError(f"mkdtemp() failed ({err.errno}: {err.strerror})") from err
    if owner is not None:
        try:
            os.chown(path, owner, -1)
        except OSError as err:
            raise MetricsError(f'chown() "{path}" failed ({err.errno}: {err.strerror})') from err
    environ[ENV] = path
    return path


def release_directory() -> None:
    """Cold stop: remove the folder this master made (not an admin's, not a new binary's)."""
    global _created
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
        _created = None


def _is_ours(path: str) -> bool:
    name = os.path.basename(path)
    return os.path.dirname(path) == tempfile.gettempdir() and name.startswith(PREFIX)


def _check_private(path: str, owner: int | None) -> None:
    try:
        info = os.lstat(path)
    except OSError as err:
        raise MetricsError(f'stat() "{path}" failed ({err.errno}: {err.strerror})') from err
    # Never follow a link or write where another user could plant or read files.
    owners = {os.geteuid(), owner}
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners or info.st_mode & 0o077:
        raise MetricsError(f'"{path}" ({ENV}) is not a private folder of mailgate\'s user')


def _file_pid(name: str) -> int | None:
    """``counter_1234.db`` -> 1234 (prometheus_client's file names)."""
    stem = name.removesuffix(".db")
    digits = stem.rsplit("_", 1)[-1]
    return int(digits) if stem != name and digits.isdigit() else None


def _is_mailgate(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"mailgate" in fh.read()
    except (ProcessLookupError, FileNotFoundError):
        return False
    except OSError:
        return True  # alive but not ours to inspect: do not wipe on a guess


def _live_writers(path: str) -> bool:
    """Whether a running mailgate process (not this one) still writes in ``path``."""
    me = os.getpid()
    pids = {_file_pid(name) for name in os.listdir(path)}
    return any(pid is not None and pid != me and _is_mailgate(pid) for pid in pids)


def _wipe(path: str) -> None:
    for name in os.listdir(path):
        if name.endswith(".db"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))


def mark_dead(pid: int) -> None:
    """For the master's reap loop: the ``live*`` gauges of ``pid`` stop counting."""
    path = os.environ.get(ENV)
    if not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
