"""The same ``mail {}`` configuration on real nginx and on mailgate.

A template's ``%%NAME%%`` placeholders are filled from a table, and each unknown
``%%PORT_<name>%%`` gets a free port (``Gateway.port("<name>")``). Both implementations run the
same file with the same ``-p``/``-c``/``-g`` command line; mailgate skips the ``load_module``
line with a warning.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import nginx
from tests.servers.ports import free_ports
from tests.support.clients import LineClient
from tests.support.master import START_TIMEOUT, Master, master_ready, spawn_master
from tests.support.processes import children, wait_until

IMPLEMENTATIONS = ("nginx", "mailgate")
PLACEHOLDER = re.compile(r"%%(\w+)%%")
LISTEN_PORT = re.compile(r"listen\s+127\.0\.0\.1:%%PORT_(\w+)%%")
CONFIG_HEADER = f"""\
{nginx.LOAD_MAIL_MODULE}
worker_processes 2;
events {{
    worker_connections 512;
}}
"""
DEFAULT_WORKERS = 2
DEFAULT_CONNECTIONS = 512


@dataclass
class Gateway:
    """A running nginx or mailgate: its ports by name, CA file and error log."""

    implementation: str
    ports: dict[str, int]
    ca: Path
    error_log: Path
    conf: Path
    backends: dict[str, int] = field(default_factory=dict)

    def port(self, name: str) -> int:
        return self.ports[name]

    def tls(self) -> ssl.SSLContext:
        """A client context that trusts the gateway's certificate."""
        return ssl.create_default_context(cafile=str(self.ca))

    def connect(self, name: str, *, tls: bool = False) -> LineClient:
        """A line client on port ``name`` (implicit TLS with ``tls=True``)."""
        return LineClient(self.port(name), tls=self.tls() if tls else None)

    def log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> bool:
        return wait_until(lambda: text in self.log_text(), timeout)

    def worker_pids(self) -> list[int]:
        """The live worker processes (children of the master named in the pid file)."""
        return children(int((self.error_log.parent / "nginx.pid").read_text()))


def render_config(
    template: str,
    values: Mapping[str, str | int],
    workers: int = DEFAULT_WORKERS,
    connections: int = DEFAULT_CONNECTIONS,
) -> tuple[str, dict[str, int]]:
    """Fill ``%%NAME%%`` placeholders; each unknown ``%%PORT_x%%`` gets a free port.

    The ports are picked together (``free_ports``): one at a time, the kernel may hand out a
    port it just gave, and nginx then refuses a duplicate listen address."""
    names = [n for n in dict.fromkeys(PLACEHOLDER.findall(template)) if n not in values]
    wanted = [n.removeprefix("PORT_") for n in names if n.startswith("PORT_")]
    ports = dict(zip(wanted, free_ports(len(wanted)), strict=True))

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return str(values[name])
        if name.startswith("PORT_"):
            return str(ports[name.removeprefix("PORT_")])
        raise KeyError(f"unknown placeholder %%{name}%% in a gateway config")

    body = PLACEHOLDER.sub(fill, template)
    header = CONFIG_HEADER.replace(
        f"worker_processes {DEFAULT_WORKERS};", f"worker_processes {workers};"
    ).replace(f"worker_connections {DEFAULT_CONNECTIONS};", f"worker_connections {connections};")
    return header + body, ports


@contextlib.contextmanager
def running_gateway(
    implementation: str,
    template: str,
    folder: Path,
    values: Mapping[str, str | int],
    ca: Path,
    *,
    workers: int = DEFAULT_WORKERS,
    connections: int = DEFAULT_CONNECTIONS,
) -> Iterator[Gateway]:
    """Start ``implementation`` on the rendered template; stop it when the block exits.

    Both run the same file with the same ``-p``/``-c``/``-g`` command line; mailgate skips the
    ``load_module`` line with a warning. ``workers`` is the ``worker_processes`` count.
    """
    text, ports = render_config(template, values, workers, connections)
    conf = folder / "nginx.conf"
    conf.write_text(text)
    listening = [ports[name] for name in LISTEN_PORT.findall(template)]
    error_log, pid = folder / "error.log", folder / "nginx.pid"
    gateway = Gateway(implementation, ports, ca, error_log, conf)
    if implementation == "nginx":
        with nginx.running_nginx(folder, conf, listening):
            yield gateway
        return
    args = ["-p", str(folder), "-c", str(conf), "-g", nginx.global_directives(pid, error_log)]
    master = Master(
        spawn_master(args, folder / "stderr.txt"),
        conf,
        pid,
        error_log,
        folder / "stderr.txt",
        listening[0],
    )
    try:
        assert wait_until(
            lambda: master_ready(master, workers) and all(nginx.accepts(p) for p in listening),
            START_TIMEOUT,
        ), f"mailgate did not start:\n{master.stderr()}\n{master.log()}"
        yield gateway
    finally:
        master.kill()
