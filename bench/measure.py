"""The measurements, run against one started gateway; each adds samples to ``Results``.

Every measurement is repeated once per round (the harness alternates nginx and mailgate
round by round, so slow drifts of the machine hit both), and the report takes medians.
Server CPU is read from /proc around the loads that already run, so CPU per connection
costs no extra run.
"""

from __future__ import annotations

import functools
import re
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import clients, procs
from bench.servers import Ports

# What a TLS version and key type mean on openssl's command line. -cipher pins the TLS 1.2
# suite to the key type as well, so a mistake in the port layout would fail the handshake.
VERSIONS = {"1.2": "-tls1_2", "1.3": "-tls1_3"}
TLS12_CIPHER = {"ecdsa": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa": "ECDHE-RSA-AES128-GCM-SHA256"}
TLS13_SUITE = "TLS_AES_128_GCM_SHA256"
S_TIME_COUNT = re.compile(rb"^(\d+) connections in [\d.]+s;", re.MULTILINE)


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions; ``--quick`` and the full run are two instances."""

    rounds: int
    s_time_seconds: int
    resume_seconds: float
    latency_samples: int
    session_seconds: float
    concurrency: int
    bulk_bytes: int
    bulk_repeats: int
    idle_counts: tuple[int, ...]
    profile_seconds: float
    budget_seconds: float
    cache_sessions: int


QUICK = Settings(
    rounds=1,
    s_time_seconds=1,
    resume_seconds=1.0,
    latency_samples=40,
    session_seconds=2.0,
    concurrency=50,
    bulk_bytes=10_000_000,
    bulk_repeats=1,
    idle_counts=(500, 2_000),
    profile_seconds=5.0,
    budget_seconds=150.0,
    cache_sessions=1_500,
)
FULL = Settings(
    rounds=3,
    s_time_seconds=3,
    resume_seconds=3.0,
    latency_samples=150,
    session_seconds=5.0,
    concurrency=50,
    bulk_bytes=50_000_000,
    bulk_repeats=2,
    idle_counts=(2_000, 10_000),
    profile_seconds=15.0,
    budget_seconds=870.0,
    cache_sessions=6_000,
)


@dataclass
class Results:
    """Samples per metric key and implementation, plus notes for the report."""

    samples: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, implementation: str, value: float) -> None:
        self.samples[key][implementation].append(value)

    def median(self, key: str, implementation: str) -> float | None:
        values = self.samples.get(key, {}).get(implementation)
        return statistics.median(values) if values else None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            print(f"  note: {text}", flush=True)


class Budget:
    """The run's wall-clock limit: a step that would start after it is skipped, not run."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Gateway:
    """What a measurement needs: the implementation's name, its processes and ports."""

    name: str
    server: procs.ServerProcs
    ports: Ports
    results: Results
    settings: Settings
    budget: Budget


# --- openssl s_time ---------------------------------------------------------------------------


def s_time(
    port: int, mode: str, version: str, key: str, *, seconds: int, clients_: int
) -> tuple[int, float, int]:
    """``clients_`` concurrent ``openssl s_time``: (connections, wall seconds, reused count).

    The rate is computed from our own wall clock: s_time's "real seconds" are whole seconds.
    ``-reuse`` prints one ``r`` per resumed connection, which proves resumption happened.
    """
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode, VERSIONS[version]]
    argv += ["-time", str(seconds)]
    argv += ["-cipher", TLS12_CIPHER[key]] if version == "1.2" else ["-ciphersuites", TLS13_SUITE]
    start = time.monotonic()
    running = [
        procs.register(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for _ in range(clients_)
    ]
    total = reused = 0
    try:
        for proc in running:
            out, err = proc.communicate(timeout=seconds + 30)
            counts = S_TIME_COUNT.findall(out)
            if proc.returncode != 0 or not counts:
                raise RuntimeError(f"s_time failed ({proc.returncode}): {err.decode()[-500:]}")
            total += int(counts[-1])
            # Progress lines hold one 'r' per resumed and one '*' per full handshake.
            progress = (line for line in out.splitlines() if line and set(line) <= {42, 114})
            reused += sum(line.count(b"r") for line in progress)
    finally:
        for proc in running:
            procs.stop(proc, timeout=1.0)
    return total, time.monotonic() - start, reused


def full_handshakes(gw: Gateway) -> None:
    for version in ("1.3", "1.2"):
        for key in ("ecdsa", "rsa"):
            port = gw.ports.imaps_ecdsa if key == "ecdsa" else gw.ports.imaps_rsa
            for count in (1, 4):
                before = gw.server.cpu()
                connections, wall, _ = s_time(
                    port, "-new", version, key, seconds=gw.settings.s_time_seconds, clients_=count
                )
                gw.results.add(f"full TLS{version} {key} {count}c", gw.name, connections / wall)
                # CPU per connection where the server, not one client, is the bottleneck.
                if count == 4 and connections:
                    cpu_us = (gw.server.cpu() - before) * 1e6 / connections
                    gw.results.add(f"cpu full TLS{version} {key}", gw.name, cpu_us)


def resumed_handshakes(gw: Gateway) -> None:
    seconds = gw.settings.s_time_seconds
    before = gw.server.cpu()
    connections, wall, reused = s_time(
        gw.ports.imaps_ecdsa, "-reuse", "1.2", "ecdsa", seconds=seconds, clients_=4
    )
    if connections:
        gw.results.add("resumed TLS1.2 4c", gw.name, connections / wall)
        gw.results.add(
            "cpu resumed TLS1.2", gw.name, (gw.server.cpu() - before) * 1e6 / connections
        )
        if reused < 0.9 * connections:
            gw.results.note(f"{gw.name}: only {reused}/{connections} TLS 1.2 -reuse resumed")
    before = gw.server.cpu()
    runs = clients.parallel(
        clients.tls13_resumptions, [(gw.ports.imaps_ecdsa, gw.settings.resume_seconds)] * 4
    )
    resumed = sum(r[0] for r in runs)
    full = sum(r[1] for r in runs)
    wall = max(r[2] for r in runs)
    gw.results.add("resumed TLS1.3 4c", gw.name, resumed / wall)
    if resumed:
        gw.results.add(
            "cpu resumed TLS1.3", gw.name, (gw.server.cpu() - before) * 1e6 / (resumed + full)
        )
    if full > 0.1 * (resumed + full):
        gw.results.note(f"{gw.name}: {full}/{resumed + full} TLS 1.3 tickets were not resumed")


def greeting_latency(gw: Gateway) -> None:
    samples = clients.greeting_latencies(gw.ports.imaps_ecdsa, gw.settings.latency_samples)
    samples = sorted(samples[2:])  # the first connects warm caches on both sides
    gw.results.add("latency p50", gw.name, statistics.median(samples) * 1e3)
    gw.results.add("latency p99", gw.name, samples[int(len(samples) * 0.99) - 1] * 1e3)


def imap_sessions(gw: Gateway) -> None:
    seconds = gw.settings.session_seconds
    loads = [
        ("sessions TLS 1c", gw.ports.imaps_ecdsa, True, 1),
        ("sessions TLS 50c", gw.ports.imaps_ecdsa, True, gw.settings.concurrency),
        ("sessions plain 50c", gw.ports.imap_plain, False, gw.settings.concurrency),
    ]
    for key, port, tls, concurrency in loads:
        before = gw.server.cpu()
        start = time.monotonic()
        rate, failed, error = clients.sessions_rate(port, tls, concurrency, seconds)
        done = rate * (time.monotonic() - start)
        gw.results.add(key, gw.name, rate)
        if key == "sessions TLS 50c" and done:
            gw.results.add("cpu session TLS", gw.name, (gw.server.cpu() - before) * 1e6 / done)
        if failed:
            gw.results.note(f"{gw.name}: {failed} failed sessions in '{key}' ({error})")


def bulk(gw: Gateway) -> None:
    clients.bulk_fetch(gw.ports.imaps_ecdsa)  # warm Dovecot's and the page cache
    for _ in range(gw.settings.bulk_repeats):
        received, seconds = clients.bulk_fetch(gw.ports.imaps_ecdsa)
        gw.results.add("bulk MB/s", gw.name, received / seconds / 1e6)


def idle_memory(gw: Gateway, count: int) -> None:
    """Worker RSS per idle TLS connection; call it on a freshly started gateway.

    A gateway that has just served the loads keeps freed heap resident (glibc arenas, Python's
    pymalloc), and new connections would reuse it for free; a fresh one must grow. A few
    connections first take the one-time costs (lazy imports, first buffers) out of the number.
    """
    clients.greeting_latencies(gw.ports.imaps_ecdsa, 20)
    time.sleep(0.5)
    before = gw.server.worker_rss()
    holders = clients.IdleHolders(gw.ports.imaps_ecdsa, count)
    try:
        held, failed, error = holders.open(timeout=max(60.0, gw.budget.left() - 20))
        time.sleep(1.0)  # let the workers finish the last handshakes and greetings
        after = gw.server.worker_rss()
        alive = len(gw.server.workers())
    finally:
        holders.close()
    gw.results.add(f"held {count}", gw.name, held)
    if held:
        gw.results.add(f"idle KiB {count}", gw.name, (after - before) / held / 1024)
    if failed or alive < 2:
        gw.results.note(
            f"{gw.name}: {failed} of {count} idle connections failed ({error}); "
            f"{alive} workers alive"
        )


SHARED_CACHE = "ssl_session_cache shared:SSL:1m; ssl_session_tickets off;"


def shared_cache(gw: Gateway, first_round: bool) -> None:
    """With ``SHARED_CACHE`` (session IDs only): store and lookup cost, and capacity.

    Two workers and 4 s_time clients: a resumption lands on either worker, so it only works
    through the shared zone. Capacity (sessions per MiB of the 1 MiB zone) is measured once.
    """
    seconds = gw.settings.s_time_seconds
    before = gw.server.cpu()
    made, wall, _ = s_time(
        gw.ports.imaps_ecdsa, "-new", "1.2", "ecdsa", seconds=seconds, clients_=4
    )
    if made:
        gw.results.add("cache full rate", gw.name, made / wall)
        gw.results.add("cache store cpu", gw.name, (gw.server.cpu() - before) * 1e6 / made)
    before = gw.server.cpu()
    made, wall, reused = s_time(
        gw.ports.imaps_ecdsa, "-reuse", "1.2", "ecdsa", seconds=seconds, clients_=4
    )
    if made:
        gw.results.add("cache resumed rate", gw.name, made / wall)
        gw.results.add("cache lookup cpu", gw.name, (gw.server.cpu() - before) * 1e6 / made)
        gw.results.add("cache resumed share", gw.name, 100 * reused / made)
    if first_round:
        stored = gw.settings.cache_sessions
        oldest, _ = clients.cache_capacity(gw.ports.imaps_ecdsa, stored, 200)
        # Nothing evicted: the zone holds at least what was stored (shown as a lower bound).
        held = stored if oldest <= 0 else stored - oldest
        gw.results.add("cache sessions/MiB", gw.name, held)
        if oldest <= 0:
            gw.results.note(f"{gw.name}: the 1 MiB zone kept all {stored} sessions (a lower bound)")


def warm_up(gw: Gateway) -> None:
    """A few sessions first: Dovecot forks its imap processes, the gateways fill caches."""
    clients.sessions_rate(gw.ports.imaps_ecdsa, True, 10, 1.0)


STEPS: tuple[tuple[str, Callable[[Gateway], None]], ...] = (
    ("warm-up", warm_up),
    ("full handshakes", full_handshakes),
    ("resumed handshakes", resumed_handshakes),
    ("greeting latency", greeting_latency),
    ("IMAP sessions", imap_sessions),
    ("bulk FETCH", bulk),
)


def measure(gw: Gateway) -> None:
    """Every load step once against a started gateway."""
    for title, step in STEPS:
        run_step(gw, title, functools.partial(step, gw))


def run_step(gw: Gateway, title: str, step: Callable[[], None], needs: float = 10.0) -> None:
    """Run one step unless the budget is spent; a step that fails is noted, not fatal."""
    if gw.budget.left() < needs:
        gw.results.skipped[title] = "time budget"
        print(f"  {title}: skipped (time budget)", flush=True)
        return
    start = time.monotonic()
    try:
        step()
    except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as err:
        gw.results.note(f"{gw.name}: {title} failed: {err!r}")
    print(f"  {title}: {time.monotonic() - start:.1f}s", flush=True)
