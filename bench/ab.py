"""A/B of one s_time load on 2-worker gateways: nginx, a git revision of mailgate, the tree.

``make bench`` measures everything in 12 minutes; this measures one row of it (by default
resumed TLS 1.2, 4 s_time -reuse) again and again in a few minutes, alternating the
gateways so that each round sees the same machine. It prints the median rate, the server
CPU µs per connection, and each mailgate's rate as a ratio to nginx.

    .venv/bin/python -m bench.ab [--compare REV] [--rounds 5] [--seconds 5]
        [--mode -reuse|-new] [--version 1.2|1.3] [--clients 4] [--no-nginx] [--latency N]
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
    ports = servers.Ports(free_ports(1)[0] - 1)
    conf = servers.gateway_config(ports, certs, 4096, 10000)
    tree = servers.snapshot_mailgate(folder / "tree")
    gateways: dict[str, Path | None] = {} if args.no_nginx else {"nginx": None}
    if args.compare:
        gateways[args.compare] = Path(hotpath.export_revision(args.compare, folder / "rev"))
    gateways[tree] = servers.mailgate_source()
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in gateways}
    for round_ in range(args.rounds):
        order = list(gateways) if round_ % 2 == 0 else list(reversed(gateways))
        for name in order:
            source = gateways[name]
            servers.run_mailgate_from(source)
            implementation = "nginx" if source is None else "mailgate"
            with servers.running_gateway(implementation, folder / "gw", conf, ports) as server:
                found[name].append(_measure(args, ports, server))
            print(f"round {round_ + 1}: {name}: {_shown(args, *found[name][-1])}")
    print(f"\n{_load(args)}, {args.rounds} rounds, medians")
    first = statistics.median(value for value, _ in found[next(iter(gateways))])
    for name, samples in found.items():
        value = statistics.median(value for value, _ in samples)
        cpu = statistics.median(cpu for _, cpu in samples)
        print(f"{name:40} {_shown(args, value, cpu):24} {value / first:.3f}x")
    return 0


def _measure(
    args: argparse.Namespace, ports: servers.Ports, server: procs.ServerProcs
) -> tuple[float, float]:
    """(connections per second, server CPU µs per connection), or with --latency (p50 ms, 0)."""
    port = ports.imaps_ecdsa
    if args.latency:
        samples = clients.greeting_latencies(port, args.latency + 2)
        return statistics.median(samples[2:]) * 1e3, 0.0
    load = (args.mode, args.version, "ecdsa")
    measure.s_time(port, *load, seconds=1, clients_=args.clients)  # warm-up
    before = server.cpu()
    count, wall, _ = measure.s_time(port, *load, seconds=args.seconds, clients_=args.clients)
    return count / wall, (server.cpu() - before) * 1e6 / max(count, 1)


def _shown(args: argparse.Namespace, value: float, cpu: float) -> str:
    return f"p50 {value:.2f} ms" if args.latency else f"{value:,.0f}/s, {cpu:.0f} µs"


def _load(args: argparse.Namespace) -> str:
    if args.latency:
        return "greeting after a full TLS 1.3 handshake"
    return f"{args.clients} x s_time {args.mode} TLS {args.version}"


if __name__ == "__main__":
    raise SystemExit(main())
