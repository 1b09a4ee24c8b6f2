"""A private dnsmasq (Debian's dnsmasq-base) answering from records the test defines.

It listens on 127.0.0.1 on a free port, asks no upstream server and reads no /etc file, so
it answers only what ``DnsRecords`` says; anything else in its local zones (``.test`` and the
documentation ranges' reverse zones) is NXDOMAIN, and a name elsewhere (say 198.51.100.1's PTR)
is REFUSED, which is handy for a server-failure case.
``--log-queries`` writes every query it receives to a log, which ``DnsInfo.queries()`` reads,
so a test can tell a cache hit (no query) from a lookup.

``CraftedDns`` is the other kind: loopback UDP servers that answer with bytes a test crafts,
for the answers no real server gives (a DNAME alone, a zero-length record, a wrong ID...).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.files import log_tail
from tests.servers.ports import LOOPBACK, free_ports

DNSMASQ = "/usr/sbin/dnsmasq"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
DEFAULT_TTL = 300
_PROBE = bytes.fromhex("beef01000001000000000000") + b"\x05probe\x04test\x00\x00\x01\x00\x01"


@dataclass(frozen=True)
class DnsRecords:
    """``ptr``: address -> PTR name. ``hosts``: name -> its A/AAAA addresses.

    dnsmasq also answers a host's addresses' PTR queries with the host name, so keep the
    addresses of a PTR-only test case out of ``hosts``.
    """

    ptr: Mapping[str, str] = field(default_factory=dict)
    hosts: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ttl: int = DEFAULT_TTL
    # Zones dnsmasq answers for itself: a name in them without a record is NXDOMAIN. By default
    # .test and the reverse zones of 192.0.2.0/24 and 2001:db8::/32 (documentation ranges).
    local_zones: Sequence[str] = ("test", "2.0.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")


@dataclass(frozen=True)
class DnsInfo:
    host: str
    port: int
    log_path: Path

    @property
    def server(self) -> str:
        """As ``ServerConfig.resolver`` lists it."""
        return f"{self.host}:{self.port}"

    def queries(self) -> list[str]:
        """Every query so far, oldest first, as ``"PTR 5.2.0.192.in-addr.arpa"``."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            _, sep, rest = line.partition(": query[")
            if sep:
                rdtype, _, after = rest.partition("] ")
                found.append(f"{rdtype} {after.split(' from ')[0]}")
        return found


def dnsmasq_args(port: int, records: DnsRecords, hosts_file: Path, log: Path) -> list[str]:
    args = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--port={port}",
        f"--listen-address={LOOPBACK}",
        "--bind-interfaces",
        f"--addn-hosts={hosts_file}",
        f"--local-ttl={records.ttl}",
        "--log-queries",
        f"--log-facility={log}",
        "--pid-file=",
        f"--user={pwd.getpwuid(os.getuid()).pw_name}",  # no switch to "nobody": log stays ours
    ]
    args.extend(f"--local=/{zone}/" for zone in records.local_zones)
    for address, name in records.ptr.items():
        args.append(f"--ptr-record={ipaddress.ip_address(address).reverse_pointer},{name}")
    for name, addresses in records.hosts.items():
        args.append(f"--host-record={','.join([name, *addresses])}")
    return args


@contextlib.contextmanager
def running_dnsmasq(tmpdir: Path, records: DnsRecords) -> Iterator[DnsInfo]:
    """Start dnsmasq, wait until it answers on UDP, stop it on exit."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    hosts_file = tmpdir / "dns-hosts"
    hosts_file.write_text("# records come from --host-record / --ptr-record\n")
    log = tmpdir / "dnsmasq.log"
    port = free_ports(1)[0]
    with (tmpdir / "dnsmasq.stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            dnsmasq_args(port, records, hosts_file, log),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        _wait_until_answering(port, proc, tmpdir)
        yield DnsInfo(LOOPBACK, port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_answering(port: int, proc: subprocess.Popen[bytes], tmpdir: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                stderr = log_tail(tmpdir / "dnsmasq.stderr")
                raise RuntimeError(f"dnsmasq exited with {proc.returncode}: {stderr}")
            sock.sendto(_PROBE, (LOOPBACK, port))
            with contextlib.suppress(OSError):
                if sock.recv(512)[:2] == _PROBE[:2]:
                    return
            time.sleep(0.05)
    raise TimeoutError(f"dnsmasq on port {port} did not answer in {START_TIMEOUT}s")


# --- A responder that crafts every byte of its replies ---------------------------------------

# DNS types and classes by number, as the crafted records need them.
TYPE_A, TYPE_CNAME, TYPE_PTR, TYPE_TXT, TYPE_AAAA, TYPE_DNAME = 1, 5, 12, 16, 28, 39
CLASS_IN, CLASS_CH = 1, 3
TO_QUESTION = b"\xc0\x0c"  # a compression pointer to the question's name
FLAGS_QR_RD_RA = 0x8180
FLAG_TC = 0x0200
FLAG_AD = 0x0020


def wire_name(text: str) -> bytes:
    """``mail.test`` as uncompressed labels."""
    labels = [label.encode() for label in text.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def record(
    owner: bytes, rtype: int, rdata: bytes, *, ttl: int = 60, rclass: int = CLASS_IN
) -> bytes:
    """One resource record; ``owner`` is wire bytes (``wire_name(...)`` or ``TO_QUESTION``)."""
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


@dataclass(frozen=True)
class DnsQuery:
    """A query as received: its ID, question (lower-case name, type) and raw question bytes."""

    ident: int
    name: str
    rtype: int
    question: bytes

    @classmethod
    def parse(cls, wire: bytes) -> DnsQuery:
        end = 12
        labels = []
        while wire[end]:
            labels.append(wire[end + 1 : end + 1 + wire[end]].decode("latin-1"))
            end += 1 + wire[end]
        (rtype,) = struct.unpack("!H", wire[end + 1 : end + 3])
        return cls(
            int.from_bytes(wire[:2], "big"), ".".join(labels).lower(), rtype, wire[12 : end + 5]
        )

    def reply(
        self, *records: bytes, rcode: int = 0, flags: int = FLAGS_QR_RD_RA, ident: int | None = None
    ) -> bytes:
        """The reply carrying ``records`` in its answer section, nothing else."""
        header = struct.pack(
            "!HHHHHH",
            self.ident if ident is None else ident,
            flags | rcode,
            1,
            len(records),
            0,
            0,
        )
        return header + self.question + b"".join(records)


# What a crafted server sends for one query: datagrams, each after a delay in seconds.
Replies = list[tuple[float, bytes]]
Script = Callable[[DnsQuery], Replies]


class CraftedDns:
    """UDP servers on loopback, one per script, answering from one thread.

    For the answers a real server would never give (a DNAME alone, a zero-length record, a
    wrong ID...), so a test can show what the gateway makes of each.
    """

    def __init__(self) -> None:
        self._scripts: dict[socket.socket, Script] = {}
        self._pending: list[tuple[float, socket.socket, bytes, tuple[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def add(self, script: Script) -> str:
        """A new server answering with ``script``; its address as ``resolver`` takes it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        self._scripts[sock] = script
        return f"{LOOPBACK}:{sock.getsockname()[1]}"

    def __enter__(self) -> CraftedDns:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self._scripts:
            sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for item in [p for p in self._pending if p[0] <= now]:
                self._pending.remove(item)
                item[1].sendto(item[2], item[3])
            readable, _, _ = select.select(list(self._scripts), [], [], 0.01)
            for sock in readable:
                wire, peer = sock.recvfrom(4096)
                for delay, datagram in self._scripts[sock](DnsQuery.parse(wire)):
                    self._pending.append((time.monotonic() + delay, sock, datagram, peer))
