"""Where mailgate's workers spend their time under load, from ``py-spy record``.

py-spy samples the master and both workers (``--subprocesses``) without stopping them
(``--nonblocking``), and writes collapsed stacks (``--format raw``). Idle samples (a worker
waiting in epoll) are left out by py-spy, so the shares are shares of busy time. Time inside
OpenSSL shows on the Python frame that called it (``do_handshake``, ``send``...).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import procs

TRUNK = 0.9
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy next to this interpreter (installed in .venv), else on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_record(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
    argv = [binary, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    argv += ["--rate", str(rate), "--duration", str(int(seconds)), "--format", "raw"]
    argv += ["--output", str(out)]
    return procs.register(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))


@dataclass(frozen=True)
class Profile:
    """Sample shares by ``file:function``: as the running frame, and anywhere on the stack."""

    samples: int
    own: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]


def _frame(text: str) -> str | None:
    match = FRAME.match(text)
    if match is None:  # "process 123:..." and "thread (0x...)" roots carry no code
        return None
    name = Path(match["file"]).name if "/" in match["file"] else match["file"]
    return f"{name}:{match['func']}"


def summarize(raw: Path, top: int = 15) -> Profile:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in (_frame(part) for part in stack.split(";")) if f is not None]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return Profile(0, [], [])
    # Frames on nearly every stack are the trunk (runpy, cli, arbiter, worker loop): leave them
    # out of the inclusive list so it shows the branches that differ.
    branches = [(name, n) for name, n in inclusive.most_common() if n < TRUNK * total]
    return Profile(
        total,
        [(name, n / total) for name, n in own.most_common(top)],
        [(name, n / total) for name, n in branches[:top]],
    )


def markdown(title: str, profile: Profile) -> str:
    if not profile.samples:
        return f"**{title}**: no samples."
    lines = [
        f"**py-spy on mailgate, {title}** ({profile.samples:,} busy samples at 250 Hz, "
        "master + workers)",
        "",
        f"Inclusive shares leave out the frames on more than {TRUNK:.0%} of stacks (the loop).",
        "",
        "| running frame (self) | share | on the stack (inclusive) | share |",
        "|---|---:|---|---:|",
    ]
    for (own, own_share), (inc, inc_share) in zip(profile.own, profile.inclusive, strict=False):
        lines.append(f"| `{own}` | {own_share:.1%} | `{inc}` | {inc_share:.1%} |")
    return "\n".join(lines)
