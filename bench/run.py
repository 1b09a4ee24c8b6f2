"""mailgate against nginx's mail proxy, side by side on one config: ``make bench``.

    .venv/bin/python bench/run.py            # full run, about 12 minutes, writes BENCHMARKS.md
    .venv/bin/python bench/run.py --quick    # 2-minute smoke run (also writes BENCHMARKS.md)
    .venv/bin/python bench/run.py --help     # sizes, rounds, --only, --no-write, --base-port

Dovecot and an auth_http server start once; then, round after round, nginx and mailgate each
run the same config file on the same loopback ports while every measurement runs against it
(see bench/measure.py). Every process started here is stopped on exit, Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

# Run as a script, bench/ is sys.path[0]; put the repo root there instead, so the modules
# import as bench.* and tests.servers.* (mailgate itself runs in subprocesses only).
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

from bench import analysis, measure, procs, profile, report, servers  # noqa: E402

BENCHMARKS = ROOT / "BENCHMARKS.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark mailgate against nginx's mail proxy.")
    parser.add_argument("--quick", action="store_true", help="2-minute smoke run")
    parser.add_argument("--rounds", type=int, help="repetitions of every measurement")
    parser.add_argument("--s-time-seconds", type=int, help="length of each openssl s_time run")
    parser.add_argument("--session-seconds", type=float, help="length of each sessions/s run")
    parser.add_argument("--bulk-mb", type=float, help="size of the bulk message in MB")
    parser.add_argument("--idle", type=int, nargs="+", help="idle connection counts to hold")
    parser.add_argument("--concurrency", type=int, help="concurrent IMAP clients")
    parser.add_argument("--budget", type=float, help="wall-clock limit in seconds")
    parser.add_argument("--only", choices=servers.IMPLEMENTATIONS, help="measure one gateway")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--no-perf", action="store_true", help="skip the perf library split")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--base-port", type=int, default=19100, help="ports base+1 … base+21")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> measure.Settings:
    base = measure.QUICK if args.quick else measure.FULL
    changes: dict[str, Any] = {
        "rounds": args.rounds,
        "s_time_seconds": args.s_time_seconds,
        "session_seconds": args.session_seconds,
        "bulk_bytes": None if args.bulk_mb is None else int(args.bulk_mb * 1e6),
        "idle_counts": None if args.idle is None else tuple(args.idle),
        "concurrency": args.concurrency,
        "budget_seconds": args.budget,
    }
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def raise_fd_limit(needed: int) -> int:
    """Raise the soft limit to the hard one (idle holders and servers inherit it); return it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        print(f"warning: RLIMIT_NOFILE is {hard}, {needed} wanted", file=sys.stderr)
    return int(hard)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass(frozen=True)
class Bench:
    """What every gateway start shares within one run."""

    folder: Path
    conf: str
    ports: servers.Ports
    results: measure.Results
    settings: measure.Settings
    budget: measure.Budget
    shared_conf: str | None  # the config with a shared cache, when mailgate has one

    def with_gateway(
        self,
        name: str,
        run_dir: Path,
        body: Callable[[measure.Gateway], None],
        conf: str | None = None,
    ) -> bool:
        """Run ``body`` on a freshly started gateway; False (and a note) if it did not start."""
        try:
            with servers.running_gateway(name, run_dir, conf or self.conf, self.ports) as server:
                body(
                    measure.Gateway(
                        name, server, self.ports, self.results, self.settings, self.budget
                    )
                )
        except RuntimeError as err:  # measurements catch their own errors: this is the start
            self.results.note(f"{name} did not start in {run_dir.name}: {str(err)[-400:]}")
            return False
        return True

    def rounds(self, implementations: tuple[str, ...]) -> int:
        """Each round: each gateway through the loads, then fresh ones for idle memory.

        Returns how many gateway starts failed.
        """
        failed = 0
        for round_no in range(self.settings.rounds):
            # Alternate who goes first, so a drift of the machine does not favour one.
            order = implementations if round_no % 2 == 0 else implementations[::-1]
            for name in order:
                print(f"round {round_no + 1}/{self.settings.rounds}: {name}", flush=True)
                run_dir = self.folder / f"{name}-{round_no}"
                failed += not self.with_gateway(name, run_dir, measure.measure)
                for count in self.settings.idle_counts:
                    idle = functools.partial(idle_step, count=count)
                    failed += not self.with_gateway(name, run_dir / f"idle{count}", idle)
                if self.shared_conf is not None:
                    failed += not self.with_gateway(
                        name,
                        run_dir / "shared-cache",
                        functools.partial(cache_step, first_round=round_no == 0),
                        self.shared_conf,
                    )
        return failed


def cache_step(gw: measure.Gateway, first_round: bool) -> None:
    measure.run_step(gw, "shared cache", lambda: measure.shared_cache(gw, first_round), needs=30.0)


def idle_step(gw: measure.Gateway, count: int) -> None:
    measure.run_step(gw, f"idle {count}", lambda: measure.idle_memory(gw, count), needs=30.0)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    implementations = (args.only,) if args.only else servers.IMPLEMENTATIONS
    command = " ".join([".venv/bin/python bench/run.py", *argv])
    if "nginx" in implementations and (why := servers.missing_nginx()) is not None:
        print(f"bench: {why}", file=sys.stderr)
        return 2
    if not args.no_profile and "mailgate" in implementations and profile.py_spy() is None:
        # Checked now: the profile runs after every measurement, and a crash there loses them.
        print("bench: py-spy is missing (make bench installs it; or --no-profile)", file=sys.stderr)
        return 2
    ports = servers.Ports(args.base_port)
    try:
        servers.check_ports_free(ports.all)
    except servers.PortTaken as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    # One worker may get every idle connection; the holders split them over 4 processes.
    worker_connections = int(max(settings.idle_counts) * 1.2) + 100
    fd_limit = raise_fd_limit(max(settings.idle_counts) + 1000)
    # Ctrl-C must stop the run even when started from a shell that ignores SIGINT (``&``).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)

    started = time.monotonic()
    pressure = report.cpu_pressure_total()
    budget = measure.Budget(settings.budget_seconds)
    results = measure.Results()
    folder = Path(tempfile.mkdtemp(prefix="mailgate-bench-", dir="/tmp"))
    folder.chmod(0o755)  # Dovecot's unprivileged processes work in it
    profiles: list[str] = []
    failed = 0
    try:
        source = servers.snapshot_mailgate(folder)
        certs = servers.make_certificates(folder)
        conf = servers.gateway_config(ports, certs, worker_connections, fd_limit)
        shared_cache = servers.shared_cache_missing(folder / "probe", conf)
        with (
            servers.running_dovecot(folder, ports, settings.bulk_bytes),
            servers.running_auth_server(folder, ports),
        ):
            shared_conf = None
            if shared_cache is None:  # mailgate has the shared zone: both run it
                shared_conf = conf.replace("mail {\n", f"mail {{\n    {measure.SHARED_CACHE}\n")
            bench = Bench(folder, conf, ports, results, settings, budget, shared_conf)
            failed = bench.rounds(implementations)
            if not args.no_profile and "mailgate" in implementations:
                if budget.left() > 3 * settings.profile_seconds + 20:
                    profiles = analysis.run_profiles(folder, conf, ports, settings)
                else:
                    results.note("py-spy profile skipped: time budget")
            if not args.no_perf:
                if budget.left() > analysis.native_seconds(settings, implementations) + 10:
                    profiles += analysis.run_native(folder, conf, ports, settings, implementations)
                else:
                    results.note("perf split skipped: time budget")
    except KeyboardInterrupt:
        print("bench: interrupted, stopping everything", file=sys.stderr)
        return 130
    finally:
        procs.kill_all()
        if args.keep:
            print(f"bench: work folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    elapsed = time.monotonic() - started
    load = report.contention(pressure, elapsed)
    body = report.table(results, settings, shared_cache)
    if profiles:
        body += "\n\n#### Where the server CPU goes\n\n" + "\n\n".join(profiles)
    print()
    print(body)
    for note in results.notes:
        print(f"note: {note}")
    print(f"\nwall time: {elapsed / 60:.1f} min; {load}")
    if not args.no_write:
        section = report.results_section(
            body,
            command,
            settings,
            elapsed=elapsed,
            notes=results.notes,
            load=load,
            source=source,
        )
        history = report.history_line(results, command, source)
        report.write_benchmarks(BENCHMARKS, section, history)
        print(f"written to {BENCHMARKS}")
    if failed:
        print(f"bench: {failed} gateway start(s) failed, see the notes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
