"""The Prometheus scrape endpoint: a process of its own, and the master's side of it.

Every mailgate process writes its metrics into one directory (prometheus_client's multiprocess
mode, see :mod:`mailgate.worker.observe.metrics`); the metrics process answers ``GET /metrics`` by
summing those files with a fresh registry per scrape. It runs apart from the master so that a
slow or stuck scraper never delays the master's signal handling, nor a worker's connections.

One module per job:

* :mod:`.directory`: the multiprocess folder. ``prepare_environment`` sets
  ``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client, ``release_directory``
  removes it at a cold stop, ``mark_dead`` is called for every child the master reaps.
* :mod:`.supervisor`: ``MetricsServer``, the master's side: starts the metrics process,
  restarts it if it dies, keeps or replaces it on a reload.
* :mod:`.endpoint`: the metrics process itself (``python -m mailgate.master.metrics``) and
  ``bind``, which the master calls so ``bind() failed`` is reported like any listener's.
* :mod:`.events`: what only the master counts (worker restarts, reloads, upgrades, build info).
"""

from __future__ import annotations


class MetricsError(Exception):
    """The scrape endpoint cannot be set up; ``str()`` is the line to log."""
