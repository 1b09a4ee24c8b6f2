"""Server CPU per connection split by library (``perf record``), for nginx and mailgate alike.

The crypto is the same OpenSSL in both servers, so the per-connection µs spent in libcrypto and
libssl should match; what mailgate spends on top (in the Python interpreter, in pyOpenSSL's cffi
glue, and in extra system calls) is the gap the performance work has to close. py-spy cannot
show that split: it charges OpenSSL's time to the Python frame that called it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import procs

SHARE = re.compile(r"^\s*([\d.]+)%\s+(\S.*?)\s*$")
# Library names as perf prints them, folded into the groups worth comparing.
GROUPS = (
    ("libcrypto", "OpenSSL libcrypto"),
    ("libssl", "OpenSSL libssl"),
    ("python", "Python interpreter"),
    ("_cffi_backend", "cffi (pyOpenSSL glue)"),
    ("_openssl", "cffi (pyOpenSSL glue)"),
    ("kernel", "kernel"),
    ("libc", "libc"),
    ("nginx", "nginx binary + mail module"),
    ("ngx_mail", "nginx binary + mail module"),
)


def perf() -> str | None:
    return shutil.which("perf")


@dataclass(frozen=True)
class Split:
    """µs of server CPU per connection, by library group."""

    per_connection: dict[str, float]
    total_us: float


def _group(dso: str) -> str:
    for needle, name in GROUPS:
        if needle in dso:
            return name
    return "other"


def record(
    server: procs.ServerProcs, load: Callable[[], int], seconds: float, out: Path
) -> Split | None:
    """Run ``load`` (it returns the connections it made) under ``perf record`` of the server."""
    binary = perf()
    if binary is None:
        return None
    pids = ",".join(str(pid) for pid in [server.master, *server.workers()])
    # cpu-clock, a software event, works in VMs and containers without a PMU.
    argv = [binary, "record", "-e", "cpu-clock", "-F", "499", "-p", pids, "-o", str(out)]
    recorder = procs.register(
        subprocess.Popen(
            [*argv, "--", "sleep", str(seconds + 2)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    before = server.cpu()
    connections = load()
    total_us = (server.cpu() - before) * 1e6
    recorder.wait(seconds + 30)
    procs.stop(recorder)
    report = subprocess.run(
        [binary, "report", "-i", str(out), "--sort", "dso", "--stdio", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    shares: dict[str, float] = {}
    for line in report.stdout.splitlines():
        match = SHARE.match(line)
        if match:
            group = _group(match[2])
            shares[group] = shares.get(group, 0.0) + float(match[1]) / 100
    if not shares or not connections:
        return None
    per = total_us / connections
    return Split({name: share * per for name, share in shares.items()}, per)


def markdown(title: str, splits: dict[str, Split | None]) -> str:
    """One table: library group, then µs per connection for each implementation."""
    present = {name: split for name, split in splits.items() if split is not None}
    if not present:
        return f"**{title}**: perf unavailable or recorded nothing."
    groups = sorted(
        {group for split in present.values() for group in split.per_connection},
        key=lambda g: -max(s.per_connection.get(g, 0.0) for s in present.values()),
    )
    names = list(present)
    lines = [
        f"**{title}**: server CPU µs per connection by library (perf, cpu-clock)",
        "",
        "| library | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for group in groups:
        cells = [f"{present[n].per_connection.get(group, 0.0):,.0f}" for n in names]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"{present[n].total_us:,.0f}" for n in names) + " |")
    absent = [name for name in splits if name not in present]
    if absent:
        lines += ["", f"({', '.join(absent)}: perf recorded nothing for this load.)"]
    return "\n".join(lines)
