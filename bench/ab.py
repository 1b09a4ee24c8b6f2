"""A/B of one s_time load on 2-worker gateways: nginx, a git revision of mailgate, the tree.

``make bench`` measures everything in 12 minutes; this measures one row of it (by default
resumed TLS 1.2, 4 s_time -reuse) again and again in a few minutes, alternating the
gateways so that each round sees the same machine. It prints the median rate, the server
CPU µs per connection, and each mailgate's rate as a ratio to nginx.

    .venv/bin/python -m bench.ab [--compare REV] [--rounds 5] [--seconds 5]
        [--mode -reuse|-new] [--version 1.2|1.3] [--clients 4]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench import clients, hotpath, measure, procs, servers
from tests.servers.ports import free_ports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", metavar="REV", help="a git revision of mailgate to add")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--mode", choices=("-reuse", "-new"), default="-reuse")
    parser.add_argument("--version", choices=("1.2", "1.3"), default="1.2")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument(
        "--latency",
        type=int,
        metavar="N",
        help="instead of s_time: N greetings after a full TLS 1.3 handshake, p50 in ms",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mailgate-ab-", dir="/tmp"))
    try:
        return _run(args, folder)
    finally:
        procs.kill_all()
        shutil.rmtree(folder, ignore_errors=True)


def _run(args: argparse.Namespace, folder: Path) -> int:
    certs = servers.make_certificates(folder)
    base = free_ports(1)[0] - 1
    ports = servers.Ports(base)
    conf = servers.gateway_config(ports, certs, 4096, 10000)
    tree = servers.snapshot_mailgate(folder / "tree")
    gateways: dict[str, str | None] = {} if args.no_nginx else {"nginx": None}
    if args.compare:
        gateways[args.compare] = hotpath.export_revision(args.compare, folder / "rev")
    gateways[tree] = str(folder / "tree" / "src")
    rates: dict[str, list[float]] = {name: [] for name in gateways}
    cpus: dict[str, list[float]] = {name: [] for name in gateways}
    for round_ in range(args.rounds):
        order = list(gateways) if round_ % 2 == 0 else list(reversed(gateways))
        for name in order:
            source = gateways[name]
            servers.run_mailgate_from(None if source is None else Path(source))
            implementation = "nginx" if source is None else "mailgate"
            with servers.running_gateway(implementation, folder / "gw", conf, ports) as server:
                if args.latency:
                    samples = clients.greeting_latencies(ports.imaps_ecdsa, args.latency + 2)
                    rates[name].append(statistics.median(samples[2:]) * 1e3)
                    cpus[name].append(0.0)
                    print(f"round {round_ + 1}: {name}: p50 {rates[name][-1]:.2f} ms")
                    continue
                measure.s_time(ports.imaps_ecdsa, args.mode, args.version, "ecdsa",
                               seconds=1, clients_=args.clients)  # fmt: skip
                before = server.cpu()
                count, wall, _ = measure.s_time(
                    ports.imaps_ecdsa, args.mode, args.version, "ecdsa",
                    seconds=args.seconds, clients_=args.clients,
                )  # fmt: skip
                cpus[name].append((server.cpu() - before) * 1e6 / max(count, 1))
                rates[name].append(count / wall)
            print(f"round {round_ + 1}: {name}: {rates[name][-1]:,.0f}/s, "
                  f"{cpus[name][-1]:.0f} µs")  # fmt: skip
    load = f"{args.clients} x s_time {args.mode} TLS {args.version}"
    if args.latency:
        load = "greeting after full TLS 1.3 (the rate column: p50 ms)"
    print(f"\n{load}, {args.rounds} rounds, medians")
    first = statistics.median(rates[next(iter(gateways))])
    for name in gateways:
        rate = statistics.median(rates[name])
        if args.latency:
            print(f"{name:40} {rate:8.2f} ms  {rate / first:.3f}x")
            continue
        print(f"{name:40} {rate:8,.0f}/s {statistics.median(cpus[name]):6.0f} µs  "
              f"{rate / first:.3f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
