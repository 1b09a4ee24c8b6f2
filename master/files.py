"""The files a configuration names besides itself, as the master handles them.

nginx opens its log files in the master, as root, before anything forks: a missing folder or
an unknown ``user`` stops ``nginx -t`` and the start with one ``[emerg]`` line. mailgate's
workers open their access logs themselves, so the master checks them the same way first
(:func:`check`). On USR1 the master reopens every log file as root and hands it to the
workers' user (:func:`hand_over_access_logs`) before it tells the workers to reopen, which
they then can, unprivileged, even when logrotate created the new file ``0640 root adm``.
"""

from __future__ import annotations

import grp
import os
import pwd

from mailgate.config import core, model
from mailgate.master.log import STDERR, LogOpenError, open_log_file
from mailgate.worker.process import group_exists


class FileCheckError(Exception):
    """A file or identity the configuration names is unusable; ``str()`` is the message."""


def access_log_paths(config: model.Config) -> list[str]:
    """Every ``access_log`` file of ``config``, once each, in configuration order."""
    paths = (log.path for server in config.servers for log in server.access_log)
    return list(dict.fromkeys(paths))


def server_error_log_paths(config: model.Config) -> list[str]:
    """Every file a server's own ``error_log`` names (not ``stderr`` or ``syslog:``), once."""
    paths = (
        target.target
        for server in config.servers
        for target in server.error_log
        if target.target != STDERR and not target.target.startswith("syslog:")
    )
    return list(dict.fromkeys(paths))


def _worker_account(config: model.Config) -> tuple[str, str] | None:
    """``(user, group)`` the workers switch to: ``user``, or nobody when the master is root
    and none is given (as nginx); None when they stay as the master is."""
    wanted = core.worker_user(config.main.user, os.geteuid(), group_exists)
    if wanted is None:
        return None
    user, group = wanted
    return user, group or user  # nginx: no group means the group named as the user


def check(config: model.Config) -> None:
    """``-t``, start and reload: the worker user exists and every access log and server
    error log opens.

    They are created here as root, as nginx's master creates them. Raises
    :class:`FileCheckError`.
    """
    account = _worker_account(config)
    if account is not None:
        user, group = account
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise FileCheckError(f'getpwnam("{user}") failed') from None
        try:
            grp.getgrnam(group)
        except KeyError:
            raise FileCheckError(f'getgrnam("{group}") failed') from None
    for path in (*server_error_log_paths(config), *access_log_paths(config)):
        try:
            os.close(open_log_file(path))
        except LogOpenError as err:
            raise FileCheckError(str(err)) from err


def worker_uid(config: model.Config) -> int | None:
    """The uid the workers run as, if it is not the master's (None: they stay as we are)."""
    account = _worker_account(config)
    if account is None:
        return None
    try:
        return pwd.getpwnam(account[0]).pw_uid
    except KeyError:
        return None  # checked at start and reload: the user was removed since


def hand_over_access_logs(config: model.Config, owner: int) -> list[str]:
    """USR1 in the master: create every access log again and chown it to ``owner``.

    Returns the errors to log (a file that fails is left to the workers, who report it too).
    """
    errors = []
    for path in access_log_paths(config):
        try:
            os.close(open_log_file(path, owner))
        except LogOpenError as err:
            errors.append(str(err))
    return errors
