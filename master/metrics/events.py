"""What only the master (and its metrics process) counts: worker restarts, reloads, upgrades,
build info. The families themselves are in the one schema,
:mod:`mailgate.worker.observe.metrics`, which every process shares."""

from __future__ import annotations

import importlib.metadata
import platform

from mailgate.worker.observe.metrics import FAILED, OK, families


def worker_restarted() -> None:
    """The master respawned a worker that exited unexpectedly."""
    families().worker_restarts.inc()


def reload_done(ok: bool) -> None:
    families().reloads.labels(OK if ok else FAILED).inc()


def upgrade_done(ok: bool) -> None:
    families().upgrades.labels(OK if ok else FAILED).inc()


def build_info() -> None:
    """Set ``mailgate_build_info`` to 1 (in the metrics process)."""
    from OpenSSL import SSL

    openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    version = importlib.metadata.version("mailgate")
    families().build_info.labels(version, platform.python_version(), openssl).set(1)
