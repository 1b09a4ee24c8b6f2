"""Profiles after the measured rounds: py-spy on mailgate, perf on both gateways.

Each profile starts its own gateway, warms it up as the measured runs do, and puts one load on
it while the profiler records; the sections come back as markdown for BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench import clients, measure, native, procs, profile, servers


def run_profiles(
    folder: Path, conf: str, ports: servers.Ports, settings: measure.Settings
) -> list[str]:
    """py-spy on mailgate under the 50-client sessions load, then under full handshakes."""
    seconds = settings.profile_seconds
    loads: list[tuple[str, Callable[[], object]]] = [
        (
            f"IMAP sessions (TLS, {settings.concurrency} concurrent)",
            lambda: clients.sessions_rate(
                ports.imaps_ecdsa, True, settings.concurrency, seconds + 1
            ),
        ),
        (
            "full TLS 1.3 ECDSA handshakes (4 s_time)",
            lambda: measure.s_time(
                ports.imaps_ecdsa, "-new", "1.3", "ecdsa", seconds=int(seconds) + 1, clients_=4
            ),
        ),
    ]
    sections = []
    for index, (title, load) in enumerate(loads):
        with servers.running_gateway("mailgate", folder / f"profile{index}", conf, ports) as srv:
            clients.sessions_rate(ports.imaps_ecdsa, True, 10, 1.0)  # warm up, as measured
            out = folder / f"profile{index}.txt"
            recorder = profile.start_record(srv.master, seconds, out)
            load()
            _, err = recorder.communicate(timeout=seconds + 30)
            procs.stop(recorder)
            if not out.exists():
                sections.append(f"**{title}**: py-spy failed: {err.decode()[-300:]}")
                continue
            sections.append(profile.markdown(title, profile.summarize(out)))
        print(f"  profiled: {title}", flush=True)
    return sections


def native_seconds(settings: measure.Settings, implementations: tuple[str, ...]) -> float:
    """About how long ``run_native`` takes: three loads and a start per gateway."""
    return len(implementations) * (3 * max(2, int(settings.profile_seconds / 2)) + 5)


def _native_loads(
    ports: servers.Ports, settings: measure.Settings
) -> list[tuple[str, Callable[[], int]]]:
    """(title, load returning its connection count) for the perf split."""
    seconds = max(2, int(settings.profile_seconds / 2))

    def s_time(mode: str, version: str) -> Callable[[], int]:
        return lambda: measure.s_time(
            ports.imaps_ecdsa, mode, version, "ecdsa", seconds=seconds, clients_=4
        )[0]

    def sessions() -> int:
        rate, _, _ = clients.sessions_rate(ports.imaps_ecdsa, True, settings.concurrency, seconds)
        return int(rate * seconds)

    return [
        ("Full TLS 1.3 ECDSA handshakes (4 s_time -new)", s_time("-new", "1.3")),
        ("Resumed TLS 1.2 handshakes (4 s_time -reuse)", s_time("-reuse", "1.2")),
        (f"IMAP sessions over TLS ({settings.concurrency} concurrent)", sessions),
    ]


def run_native(
    folder: Path,
    conf: str,
    ports: servers.Ports,
    settings: measure.Settings,
    implementations: tuple[str, ...],
) -> list[str]:
    """perf's per-library split of server CPU per connection, for each load and gateway."""
    if native.perf() is None:
        return ["**perf split**: perf is not installed (apt-get install linux-perf)."]
    seconds = max(2, int(settings.profile_seconds / 2))
    loads = _native_loads(ports, settings)
    splits: dict[str, dict[str, native.Split | None]] = {title: {} for title, _ in loads}
    for name in implementations:
        with servers.running_gateway(name, folder / f"perf-{name}", conf, ports) as srv:
            clients.sessions_rate(ports.imaps_ecdsa, True, 10, 1.0)
            for index, (title, load) in enumerate(loads):
                out = folder / f"perf-{name}-{index}.data"
                splits[title][name] = native.record(srv, load, seconds, out)
        print(f"  perf split: {name}", flush=True)
    return [native.markdown(title, by_name) for title, by_name in splits.items()]
