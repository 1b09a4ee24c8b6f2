"""The ``env`` directive: what environment a worker process keeps.

As nginx does, workers drop every inherited variable except ``TZ`` and those named by
``env NAME;`` (kept as inherited) or ``env NAME=VALUE;`` (set). mailgate's own variables
that a worker needs to function are kept too (the metrics directory).
"""

from __future__ import annotations

from collections.abc import Mapping

from mailgate.master.metrics import directory as metrics_directory

# Variables mailgate itself relies on in a worker; never the admin's to drop.
INTERNAL = (metrics_directory.ENV,)


def worker_environment(
    directives: tuple[tuple[str, str | None], ...], inherited: Mapping[str, str]
) -> dict[str, str]:
    """The worker's environment for the ``env`` directives, from ``inherited``."""
    kept = {name: inherited[name] for name in ("TZ", *INTERNAL) if name in inherited}
    for name, value in directives:
        if value is not None:
            kept[name] = value
        elif name in inherited:
            kept[name] = inherited[name]
    return kept
