"""A configuration generation and the one place where it is prepared before its workers fork.

A generation is what ``mailgate -c FILE`` turned into at one moment: the parsed configuration,
its TLS contexts and its listening sockets. The master keeps exactly one current generation;
a reload (HUP) prepares the next one beside it and switches only when everything succeeded,
as nginx's ``ngx_init_cycle`` returns a new cycle or NULL (the old cycle keeps running).

Order of work for a new generation: ``cli.Paths.build()`` parses and builds the TLS contexts
(no side effects), then :func:`prepare` acquires the process-level resources the workers will
inherit. Whatever must exist in the master before ``fork()`` belongs in :func:`prepare`.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailgate.config import model
from mailgate.master import listeners as listeners_mod
from mailgate.master.log import ErrorLog, LogOpenError, ServerLogs
from mailgate.worker.process import Listening

if TYPE_CHECKING:  # annotations only: the contexts are built in cli.Paths.build()
    from mailgate.worker.tls.context import Contexts


class PrepareError(Exception):
    """A generation's resources could not be acquired; ``str()`` is the emerg message."""


@dataclass(slots=True)
class Generation:
    """One configuration generation: what its workers are forked with."""

    number: int
    config: model.Config
    contexts: Contexts
    listeners: list[Listening]
    server_logs: ServerLogs = field(default_factory=ServerLogs)  # servers' own error_log


def prepare(
    config: model.Config,
    contexts: Contexts,
    log: ErrorLog,
    *,
    previous: Generation | None = None,
    inherited: Sequence[socket.socket] = (),
) -> Generation:
    """Acquire, in the master and before any fork, what the new generation's workers share.

    At start the listeners are bound, or taken over from ``inherited`` (a binary upgrade);
    on reload those of ``previous`` are reused by address and only new addresses are bound.
    The servers' own error logs are opened here, as root, every time: nginx opens a new
    cycle's files on HUP, so a changed path is created and an unchanged one reopened.
    On any error what was acquired here is released, ``previous`` is left exactly as it was,
    and :class:`PrepareError` is raised. Shared-memory zones belong here too (created, or
    attached by name and size from ``previous``), so a reload stays one transaction.
    """
    number = 0 if previous is None else previous.number + 1
    try:
        server_logs = ServerLogs(config.servers)
    except LogOpenError as err:
        raise PrepareError(str(err)) from err
    try:
        if previous is None:
            listening = listeners_mod.open_all(config, log, inherited)
        else:
            listening = listeners_mod.reuse_or_open(config, previous.listeners, log)
    except listeners_mod.BindError as err:
        server_logs.close()
        raise PrepareError(str(err)) from err
    return Generation(number, config, contexts, listening, server_logs)


def retire(previous: Generation, current: Generation) -> None:
    """Release what ``previous`` held and ``current`` no longer uses (removed listeners).

    Runs once ``current`` is committed; the old workers keep their own copies of the
    sockets and log files until they exit, so their open sessions are not disturbed.
    """
    previous.server_logs.close()
    kept = {listening.sock for listening in current.listeners}
    listeners_mod.close_all(
        [listening for listening in previous.listeners if listening.sock not in kept]
    )
