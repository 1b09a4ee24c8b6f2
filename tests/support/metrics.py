"""Metrics as a test reads them: the scrape parsed, samples summed, and a HUP that waits.

The master's metrics process is a child of the master too, so ``workers`` tells the worker
processes apart by their title.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mailgate.master.metrics import directory as metrics_directory
from tests.support.master import Master
from tests.support.processes import cmdline, wait_until

Families = dict[str, Any]


def parse(text: str) -> Families:
    return {family.name: family for family in text_string_to_metric_families(text)}


def total(families: Families, sample: str, **labels: str) -> float:
    """Sum of the samples named ``sample`` whose labels include ``labels``."""
    family = families.get(sample.removesuffix("_total").removesuffix("_count"))
    family = family or families.get(sample.rsplit("_", 1)[0])
    if family is None:
        return 0.0
    return float(
        sum(
            s.value
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )
    )


def scrape_directory(path: Path) -> str:
    """What the metrics process would answer, computed in a fresh interpreter."""
    code = (
        "import sys; from mailgate.master.metrics.endpoint import scrape; "
        "sys.stdout.write(scrape().decode())"
    )
    env = {**os.environ, metrics_directory.ENV: str(path)}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def workers(master: Master) -> set[int]:
    """The worker processes (the metrics process is a child of the master too)."""
    return {pid for pid in master.workers() if "worker process" in cmdline(pid)}


def reload(master: Master) -> None:
    """HUP, then wait until every old worker has gone and two new ones run."""
    before = workers(master)
    master.signal(signal.SIGHUP)
    assert wait_until(lambda: not before & (now := workers(master)) and len(now) == 2, 10), (
        master.log()
    )
