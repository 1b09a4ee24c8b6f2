"""The results table (metric, nginx, mailgate, ratio, target) and BENCHMARKS.md.

BENCHMARKS.md has two machine-written regions between HTML comment markers: the latest
results (replaced on every run) and the history list (one line added per run, newest first).
Everything outside the markers is prose written by hand and is never touched.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Results, Settings

RESULTS_START, RESULTS_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
HISTORY_START, HISTORY_END = "<!-- bench:history:start -->", "<!-- bench:history:end -->"


@dataclass(frozen=True)
class Target:
    """A goal from issue 8: on the ratio (mailgate ÷ nginx) or on mailgate's own value."""

    kind: str  # "ratio>=", "ratio<=", "value<", "value>="
    value: float

    def met(self, nginx: float | None, mailgate: float | None) -> bool | None:
        if mailgate is None:
            return None
        if self.kind.startswith("value"):
            return mailgate < self.value if self.kind == "value<" else mailgate >= self.value
        if not nginx:
            return None
        ratio = mailgate / nginx
        return ratio >= self.value if self.kind == "ratio>=" else ratio <= self.value

    def text(self) -> str:
        if self.kind.startswith("ratio"):
            return f"{'≥' if self.kind == 'ratio>=' else '≤'} {self.value:g}x"
        return f"mailgate {'<' if self.kind == 'value<' else '≥'} {self.value:g}"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    target: Target | None = None


FULL = Target("ratio>=", 0.8)
RESUMED = Target("ratio>=", 0.6)


def metrics(settings: Settings) -> list[Metric]:
    """Table rows in order; the idle rows follow the run's connection counts."""
    rows = [
        Metric(f"full TLS{v} {k} {c}c", f"Full handshakes/s, TLS {v} {k.upper()}, {c} s_time", FULL)
        for v in ("1.3", "1.2")
        for k in ("ecdsa", "rsa")
        for c in (1, 4)
    ]
    rows += [
        Metric("resumed TLS1.2 4c", "Resumed handshakes/s, TLS 1.2 s_time -reuse x4", RESUMED),
        Metric("resumed TLS1.3 4c", "Resumed handshakes/s, TLS 1.3 ticket, 4 clients", RESUMED),
        Metric("latency p50", "Connect → greeting after full TLS 1.3, p50 ms", Target("value<", 2)),
        Metric("latency p99", "Connect → greeting after full TLS 1.3, p99 ms"),
        Metric("sessions TLS 1c", "IMAP sessions/s (TLS), sequential"),
        Metric(
            "sessions TLS 50c",
            f"IMAP sessions/s (TLS), {settings.concurrency} concurrent",
            Target("ratio>=", 0.7),
        ),
        Metric("sessions plain 50c", f"IMAP sessions/s (plain), {settings.concurrency} concurrent"),
        Metric(
            "bulk MB/s",
            f"Bulk FETCH of a {settings.bulk_bytes / 1e6:g} MB message, MB/s",
            Target("ratio>=", 0.8),
        ),
    ]
    for count in settings.idle_counts:
        rows.append(
            Metric(
                f"idle KiB {count}",
                f"Worker RSS per idle TLS connection, {count:,} held, KiB",
                Target("ratio<=", 2),
            )
        )
    top = max(settings.idle_counts)
    rows.append(
        Metric(f"held {top}", f"Idle TLS connections held of {top:,}", Target("value>=", top))
    )
    rows += [
        Metric(f"cpu full TLS{v} {k}", f"Server CPU µs per full handshake, TLS {v} {k.upper()}")
        for v in ("1.3", "1.2")
        for k in ("ecdsa", "rsa")
    ]
    rows += [
        Metric("cpu resumed TLS1.2", "Server CPU µs per resumed handshake, TLS 1.2"),
        Metric("cpu resumed TLS1.3", "Server CPU µs per resumed handshake, TLS 1.3"),
        Metric("cpu session TLS", "Server CPU µs per IMAP session (TLS, gateway only)"),
    ]
    return rows


CACHE_ROWS = (
    ("cache full rate", "Shared cache: full TLS 1.2 handshakes/s (store), 4 s_time"),
    ("cache store cpu", "Shared cache: server CPU µs per full handshake + store"),
    ("cache resumed rate", "Shared cache: resumed by session ID/s (lookup), 4 s_time"),
    ("cache lookup cpu", "Shared cache: server CPU µs per resumption (lookup)"),
    ("cache resumed share", "Shared cache: % of -reuse connections resumed (2 workers)"),
    ("cache sessions/MiB", "Shared cache: sessions held by a 1 MiB zone"),
)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: Results, settings: Settings, shared_cache: str | None) -> str:
    """The markdown table; ratio is always mailgate ÷ nginx."""
    lines = [
        "| metric | nginx | mailgate | ratio | target (issue 8) |",
        "|---|---:|---:|---:|---|",
    ]
    for metric in metrics(settings):
        nginx = results.median(metric.key, "nginx")
        mailgate = results.median(metric.key, "mailgate")
        ratio = f"{mailgate / nginx:.2f}" if nginx and mailgate is not None else "-"
        target = ""
        if metric.target is not None:
            met = metric.target.met(nginx, mailgate)
            verdict = {True: " met", False: " **missed**", None: ""}[met]
            target = metric.target.text() + verdict
        skipped = results.skipped.get(metric.key.replace("idle KiB", "idle"))
        if skipped:
            target += f" (skipped: {skipped})"
        lines.append(
            f"| {metric.label} | {_number(nginx)} | {_number(mailgate)} | {ratio} | {target} |"
        )
    if shared_cache is not None:
        for label in ("Shared session cache store/lookup µs", "Shared session cache sessions/MiB"):
            lines.append(f"| {label} | - | n/a | - | n/a: {shared_cache} |")
            shared_cache = "as above"
    else:
        for key, label in CACHE_ROWS:
            nginx, mailgate = results.median(key, "nginx"), results.median(key, "mailgate")
            ratio = f"{mailgate / nginx:.2f}" if nginx and mailgate is not None else "-"
            lines.append(f"| {label} | {_number(nginx)} | {_number(mailgate)} | {ratio} | |")
    return "\n".join(lines)


def machine(source: str) -> str:
    """nproc, CPU model, memory, kernel, and the versions of what was measured."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_kib / 1048576:.0f} GiB, "
        f"Linux {platform.release()}; {nginx.stderr.strip().removeprefix('nginx version: ')}, "
        f"{source}, Python {platform.python_version()}, {ssl.OPENSSL_VERSION}"
    )


def cpu_pressure_total() -> int | None:
    """Microseconds that some task waited for a CPU since boot (/proc/pressure/cpu)."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first.rpartition("total=")[2])


def contention(pressure_start: int | None, elapsed: float) -> str:
    """How much other work competed for the CPUs: the run is only as clean as this."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    text = f"load average at the end {' / '.join(load)}"
    end = cpu_pressure_total()
    if pressure_start is not None and end is not None and elapsed > 0:
        share = (end - pressure_start) / 1e6 / elapsed
        text += f"; CPU pressure (some task waiting for a CPU) {share:.0%} of the run"
    return text


def results_section(
    body: str,
    command: str,
    settings: Settings,
    *,
    elapsed: float,
    notes: list[str],
    load: str,
    source: str,
) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        f"Run {now} on {machine(source)} (mailgate ran from a copy of its sources taken at "
        "the start of the run).",
        "",
        f"Machine load: {load}. The clients run on the same cores as the servers, so rates are",
        "comparable between the two columns of one run; CPU µs per connection is the number",
        "least disturbed by other load.",
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} min; {settings.rounds} round(s), medians; "
        f"s_time {settings.s_time_seconds} s per run).",
        "",
        body,
    ]
    if notes:
        text += ["", "Notes from the run:", "", *[f"- {note}" for note in notes]]
    return "\n".join(text)


def history_line(results: Results, command: str, source: str) -> str:
    """One line for the history list: date, command and the headline ratios."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = []
    for key, name in (
        ("full TLS1.3 ecdsa 4c", "full hs"),
        ("resumed TLS1.2 4c", "resumed"),
        ("sessions TLS 50c", "sessions 50c"),
        ("bulk MB/s", "bulk"),
    ):
        nginx, mailgate = results.median(key, "nginx"), results.median(key, "mailgate")
        if nginx and mailgate is not None:
            parts.append(f"{name} {mailgate / nginx:.2f}x")
    p50 = results.median("latency p50", "mailgate")
    if p50 is not None:
        parts.append(f"mailgate p50 {p50:.1f} ms")
    return f"- {now}, {source}, `{command}`: " + (", ".join(parts) or "no results")


def write_benchmarks(path: Path, section: str, history: str) -> None:
    """Replace the results region and prepend to the history region of ``path``."""
    text = path.read_text()
    text = _replace_between(text, RESULTS_START, RESULTS_END, "\n" + section + "\n")
    old = _between(text, HISTORY_START, HISTORY_END).strip("\n")
    text = _replace_between(
        text, HISTORY_START, HISTORY_END, "\n" + "\n".join(filter(None, [history, old])) + "\n"
    )
    path.write_text(text)


def _between(text: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + "(.*?)" + re.escape(end), text, re.DOTALL)
    if match is None:
        raise ValueError(f"BENCHMARKS.md lacks the markers {start} … {end}")
    return match.group(1)


def _replace_between(text: str, start: str, end: str, body: str) -> str:
    _between(text, start, end)  # raises when the markers are missing
    pattern = re.escape(start) + ".*?" + re.escape(end)
    return re.sub(pattern, lambda _: start + body + end, text, count=1, flags=re.DOTALL)
