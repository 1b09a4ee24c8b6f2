"""Server cost per connection of one gateway process, for iterating on the hot paths.

``make bench`` compares mailgate with nginx under the whole setup; this measures one process
(``master_process off``) with one ECDSA implicit-TLS listener, quickly: full TLS 1.3 and
TLS 1.2 handshakes and TLS 1.2 resumptions from ``openssl s_time``, TLS 1.3 resumptions from
bench.clients. It prints the server's CPU µs per connection, or with ``--instructions`` the
instructions callgrind counts (thousands per connection: the same for the same work, whatever
else the machine does). ``--nginx`` measures nginx on the same file. ``--profile`` runs
mailgate under cProfile and prints the functions with the most own time, with calls per
connection (the counts are exact, the times inflated); ``--spy`` samples it with py-spy.

    make hotpath HOTPATH_ARGS="..."   (installs valgrind and py-spy), or
    .venv/bin/python -m bench.hotpath [--seconds 5] [--rounds 3] [--nginx] [--compare REV]
        [--load NAME ...] [--instructions | --profile | --spy]

``--compare HEAD`` measures the committed code beside the working tree, alternating, so a
change is judged against its base on the same machine in the same minutes.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol

from bench import clients, measure, procs, profile, servers
from tests.servers.ports import free_ports

LOOPBACK = servers.LOOPBACK
# (s_time mode, TLS version) against the ECDSA certificate; None: bench.clients' TLS 1.3
# resumption loop (s_time cannot resume TLS 1.3).
LOADS: dict[str, tuple[str, str] | None] = {
    "full TLS 1.3": ("-new", "1.3"),
    "full TLS 1.2": ("-new", "1.2"),
    "resumed TLS 1.2": ("-reuse", "1.2"),
    "resumed TLS 1.3": None,
}


def _config(folder: Path, port: int, certs: servers.Certificates) -> str:
    return f"""\
load_module {servers.MAIL_MODULE};
daemon off;
master_process off;
error_log {folder / "error.log"} warn;
pid {folder / "mailgate.pid"};
events {{ worker_connections 1024; }}
mail {{
    server_name localhost;
    auth_http {LOOPBACK}:9/auth;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen {LOOPBACK}:{port} ssl;
        protocol imap;
        ssl_certificate {certs.ecdsa_cert};
        ssl_certificate_key {certs.ecdsa_key};
    }}
}}
"""


def _load(port: int, load: tuple[str, str] | None, seconds: int) -> int:
    """Run one load for ``seconds`` with one client; the connections it made."""
    if load is None:
        resumed, full, _ = clients.tls13_resumptions(port, seconds)
        return resumed + full
    mode, version = load
    count, _, _ = measure.s_time(port, mode, version, "ecdsa", seconds=seconds, clients_=1)
    return count


def _wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not servers.accepts(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"the gateway did not listen on port {port}")
        time.sleep(0.1)


class Meter(Protocol):
    """What one load costs the server: started before the load, read after it."""

    unit: str
    start_timeout: float

    def start(self, pid: int) -> None: ...
    def stop(self, pid: int) -> float: ...


class CpuTime:
    """utime + stime from /proc, in µs: the real cost, and as noisy as the machine."""

    unit = "µs"
    start_timeout = 20.0

    def __init__(self) -> None:
        self._before = 0.0

    def start(self, pid: int) -> None:
        self._before = procs.cpu_seconds(pid)

    def stop(self, pid: int) -> float:
        return (procs.cpu_seconds(pid) - self._before) * 1e6


class Instructions:
    """Instructions executed, in thousands, counted by callgrind: the same for the same
    work whatever else the machine does (the server runs about 50 times slower)."""

    unit = "k instr"
    start_timeout = 180.0

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @staticmethod
    def wrapper(folder: Path) -> list[str]:
        return [
            "valgrind", "--tool=callgrind", "--dump-instr=no", "--compress-strings=no",
            f"--callgrind-out-file={folder}/callgrind.%p",
        ]  # fmt: skip

    def start(self, pid: int) -> None:
        subprocess.run(["callgrind_control", "--zero", str(pid)], capture_output=True, check=True)

    def stop(self, pid: int) -> float:
        subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True)
        newest = max(self._folder.glob(f"callgrind.{pid}.*"), key=lambda path: path.stat().st_mtime)
        for line in newest.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]) / 1000
        raise RuntimeError(f"no totals in {newest}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each s_time run")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions; medians shown")
    parser.add_argument("--profile", action="store_true", help="run mailgate under cProfile")
    parser.add_argument("--top", type=int, default=40, help="functions shown with --profile")
    parser.add_argument("--nginx", action="store_true", help="measure nginx too, for a ratio")
    parser.add_argument("--compare", metavar="REV", help="measure this git revision too")
    parser.add_argument("--spy", action="store_true", help="py-spy mailgate under each load")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions under callgrind (thousands per connection) instead of CPU time",
    )
    parser.add_argument(
        "--load",
        action="append",
        choices=list(LOADS),
        help="measure only this load (repeatable); all four by default",
    )
    args = parser.parse_args()
    loads = {name: LOADS[name] for name in args.load or LOADS}
    folder = Path(tempfile.mkdtemp(prefix="mailgate-hotpath-"))
    certs = servers.make_certificates(folder)
    (port,) = free_ports(1)
    conf = folder / "gateway.conf"
    conf.write_text(_config(folder, port, certs))
    profile = folder / "profile.out"
    meter: Meter = Instructions(folder) if args.instructions else CpuTime()
    counted = Instructions.wrapper(folder) if args.instructions else []
    mailgate = [*counted, sys.executable, "-m", "mailgate.master"]
    gateways: dict[str, tuple[list[str], dict[str, str] | None]] = {}
    if args.nginx:
        gateways["nginx"] = ([*counted, str(servers.NGINX)], None)
    if args.compare:
        source = export_revision(args.compare, folder)
        gateways[args.compare] = (mailgate, {**os.environ, "PYTHONPATH": source})
    if args.profile:
        mailgate = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "mailgate.master"]
    gateways["mailgate"] = (mailgate, None)
    samples: dict[str, dict[str, list[tuple[int, float]]]] = {name: {} for name in gateways}
    for _ in range(args.rounds):
        for name, (argv, env) in gateways.items():
            spy = folder if args.spy and name == "mailgate" else None
            measured = _measure(argv, env, folder, conf, port, args.seconds, spy, meter, loads)
            for load, found in measured.items():
                samples[name].setdefault(load, []).append(found)
    results = {
        name: {load: (sum(c for c, _ in found), statistics.median(us for _, us in found))
               for load, found in loads.items()}
        for name, loads in samples.items()
    }  # fmt: skip
    _print_table(results, meter.unit, list(loads))
    if args.profile:
        total = sum(count for count, _ in results["mailgate"].values())
        _print_profile(pstats.Stats(str(profile)), total, args.top)
    shutil.rmtree(folder)
    return 0


def export_revision(revision: str, folder: Path) -> str:
    """The four source folders of ``revision``, as a namespace package on PYTHONPATH."""
    target = folder / "compare" / "mailgate"
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision, "config", "shm", "worker", "master"],
        cwd=servers.ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return str(target.parent)


def _print_table(
    results: dict[str, dict[str, tuple[int, float]]], unit: str, loads: list[str]
) -> None:
    names = list(results)
    print(f"{unit + ' per connection':18} " + " ".join(f"{name:>9}" for name in names))
    for load in loads:
        cells = " ".join(f"{results[name][load][1]:9.0f}" for name in names)
        ratio = ""
        if len(names) > 1:
            ratio = f"  {results['mailgate'][load][1] / max(results[names[0]][load][1], 1):.2f}x"
        counts = ", ".join(f"{results[name][load][0]}" for name in names)
        print(f"{load:18} {cells}{ratio}  ({counts} connections)")


def _measure(  # noqa: PLR0917
    argv: list[str],
    env: dict[str, str] | None,
    folder: Path,
    conf: Path,
    port: int,
    seconds: int,
    spy: Path | None,
    meter: Meter,
    loads: dict[str, tuple[str, str] | None],
) -> dict[str, tuple[int, float]]:
    """Connections made and the server's cost per connection, for every load."""
    server = subprocess.Popen(
        [*argv, "-p", str(folder), "-c", str(conf)], start_new_session=True, env=env
    )
    found = {}
    try:
        _wait_listening(port, meter.start_timeout)
        _load(port, LOADS["full TLS 1.3"], 1)  # warm-up
        for name, load in loads.items():
            raw = None if spy is None else spy / f"{name.replace(' ', '-')}.txt"
            recorder = None
            if raw is not None:
                recorder = profile.start_record(server.pid, seconds, raw, rate=1000)
            meter.start(server.pid)
            count = _load(port, load, seconds)
            found[name] = (count, meter.stop(server.pid) / max(count, 1))
            if recorder is not None and raw is not None:
                recorder.wait(30)
                _print_spy(name, profile.summarize(raw, top=30), found[name][1])
    finally:
        procs.stop(server, timeout=20)
    return found


def _print_spy(load: str, spied: profile.Profile, micros: float) -> None:
    print(f"\n{load}: py-spy, {spied.samples} busy samples; µs per connection by frame")
    print(f"{'own':>6} {'incl':>6}  frame (own) | frame (inclusive)")
    for (own_name, own), (inc_name, inc) in zip(spied.own, spied.inclusive, strict=False):
        print(f"{own * micros:6.1f} {inc * micros:6.1f}  {own_name} | {inc_name}")


def _print_profile(stats: pstats.Stats, connections: int, top: int) -> None:
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    calls_in_all = sum(row[1] for _key, row in rows)
    print(f"\n{calls_in_all / connections:.0f} Python and C function calls per connection")
    print(f"\n{'calls/conn':>10} {'own µs/conn':>11}  function")
    for (file, line, name), (_cc, calls, own, _cum, _callers) in rows[:top]:
        where = f"{Path(file).name}:{line}:{name}" if line else name
        print(f"{calls / connections:10.2f} {own * 1e6 / connections:11.1f}  {where}")


if __name__ == "__main__":
    raise SystemExit(main())
