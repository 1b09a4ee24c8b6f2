"""The master's side of shared zones: attach them before fork, leave them at stop.

Three calls, one per moment of the master's life: :func:`prepare` when a configuration
generation is built (start, ``-t``, HUP), before its TLS contexts, so every context of the
generation finds its zone and every worker forked afterwards inherits it; :func:`started`
once the error log exists and ``daemon on`` has settled the master's pid; :func:`release` at
stop, which unlinks a zone unless another master (an upgrade in progress) still uses it.
"""

from __future__ import annotations

from mailgate.config import model
from mailgate.shm import segment
from mailgate.shm.zones import Log, ZoneError, registry
from mailgate.worker.tls.errors import TLSConfigError


def prepare(config: model.Config) -> None:
    """Create or attach every ``shared:`` zone of ``config``; unchanged ones are reused."""
    wanted = [
        (cache.shared_name, cache.shared_size)
        for server in config.servers
        if server.tls_enabled
        and not (cache := server.ssl_session_cache).off
        and cache.shared_name is not None
    ]
    try:
        registry.prepare(segment.instance_id(config.prefix, config.path), wanted)
    except ZoneError as err:
        raise TLSConfigError(str(err)) from err


def started(log: Log) -> None:
    """Log zone messages through ``log`` and own the zones under the final master pid."""
    registry.started(log)


def release() -> None:
    """Leave every zone; the last master out unlinks it (a cold stop)."""
    registry.release()
