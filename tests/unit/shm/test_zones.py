"""Zones in real shared memory: header, lock, masters, reclaim, and killed lock holders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailgate.shm import layout, segment
from mailgate.shm.lock import Lock
from mailgate.shm.zones import Header, Registry, Zone
from tests.unit.shm.conftest import log_lines

SIZE = 1 << 20
NOW = 1_000_000


def shm_path(zone: Zone) -> Path:
    return Path(segment.SHM_DIR + zone.segment.name)


def test_header_names_the_master_and_the_layout(registry: Registry) -> None:
    zone = registry.zone("SSL", SIZE)
    header = Header.read(zone.segment.buf, SIZE)
    assert header is not None
    assert bytes(zone.segment.buf[:8]) == layout.MAGIC
    assert header.size == SIZE and header.owner == os.getpid()
    assert header.generation == 1 and os.getpid() in header.masters
    assert zone.segment.name.startswith(f"/mailgate.{registry.instance}.SSL.")


def test_instances_never_share_a_segment() -> None:
    one = segment.instance_id("/etc/mailgate", "/etc/mailgate/mailgate.conf")
    other = segment.instance_id("/srv/mg", "/srv/mg/mailgate.conf")
    assert one != other
    assert segment.segment_name(one, "SSL", SIZE) != segment.segment_name(other, "SSL", SIZE)
    assert segment.segment_name(one, "a/b", 1) == f"/mailgate.{one}.a.2f.b.1"


def test_reload_reuses_a_zone_with_the_same_name_and_size(registry: Registry) -> None:
    zone = registry.zone("SSL", SIZE)
    zone.store(b"i" * 32, b"der", 300)
    registry.prepare(registry.instance, [("SSL", SIZE)])
    assert registry.zone("SSL", SIZE) is zone
    bigger = registry.zone("SSL", 2 * SIZE)  # a size change: a new, empty zone
    assert bigger is not zone and bigger.lookup(b"i" * 32) is None


def test_corrupt_header_is_reinitialised_and_logged(registry: Registry) -> None:
    zone = registry.zone("SSL", SIZE)
    zone.store(b"i" * 32, b"der", 300)
    zone.segment.buf[20] ^= 0xFF  # the size field: crc no longer matches
    assert zone.lookup(b"i" * 32) is None
    assert ("alert", 'shared zone "SSL" has a corrupt header, re-initialising it') in (
        log_lines(registry)
    )
    assert zone.header.generation == 2
    assert zone.store(b"j" * 32, b"der", 300) and zone.lookup(b"j" * 32) == b"der"


ATTACH = """
import sys
from mailgate.shm.zones import Registry
reg = Registry()
reg.prepare(sys.argv[1], [("SSL", int(sys.argv[2]))])
zone = reg.zone("SSL", int(sys.argv[2]))
found = zone.lookup(b"i" * 32)
zone.store(b"k" * 32, b"from the new master", 300)
print(found.decode(), zone.header.owner, flush=True)
if sys.argv[3] == "stay":
    sys.stdin.read()
reg.release()  # the new master's stop
"""


def attach_in_child(registry: Registry, stay: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ATTACH, registry.instance, str(SIZE), "stay" if stay else "go"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_new_master_attaches_by_name_and_the_old_one_does_not_unlink(
    registry: Registry,
) -> None:
    """The upgrade: same instance, another process; the last master out unlinks."""
    zone = registry.zone("SSL", SIZE)
    zone.store(b"i" * 32, b"from the old master", 300)
    child = attach_in_child(registry, stay=True)
    assert child.stdout is not None
    der, owner = child.stdout.readline().rsplit(" ", 1)
    assert der == "from the old master" and int(owner) == child.pid
    assert zone.lookup(b"k" * 32) == b"from the new master"
    assert not zone.leave()  # the old master stops: the new one still uses it
    assert shm_path(zone).exists()
    child.communicate("", timeout=10)  # the new master stops: last out, unlinks
    assert not shm_path(zone).exists()
    registry.zones.clear()


def test_a_crashed_masters_segment_is_reclaimed(registry: Registry) -> None:
    zone = registry.zone("SSL", SIZE)
    zone.store(b"i" * 32, b"kept", 300)
    leftover = registry.zone("OLD", SIZE)
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = int(child.stdout)
    for z in (zone, leftover):  # as if a master that has since died made them
        with z.lock:
            header = z._checked()
            header.masters = [dead, 0, 0, 0]
            header.owner = dead
            header.write(z.segment.buf)
    registry.zones.clear()
    fresh = Registry()
    fresh.instance = registry.instance
    fresh.prepare(registry.instance, [("SSL", SIZE)])
    again = fresh.zone("SSL", SIZE)
    assert again.lookup(b"i" * 32) == b"kept"
    assert again.header.masters[0] == os.getpid()
    assert not shm_path(leftover).exists()  # not configured any more: removed
    lines = [message for _, message in log_lines(fresh)]
    assert any("reclaimed from the exited master process" in line for line in lines)
    assert any("left by an exited master process" in line for line in lines)
    fresh.release()
    assert not shm_path(again).exists()


def test_a_worker_killed_holding_the_lock_does_not_wedge_the_others(
    registry: Registry,
) -> None:
    zone = registry.zone("SSL", SIZE)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        zone.lock.__enter__()  # take it and never give it back
        os.write(write_end, b"x")
        time.sleep(60)
        os._exit(0)
    assert os.read(read_end, 1) == b"x"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    started = time.monotonic()
    assert zone.store(b"i" * 32, b"der", 300)
    assert zone.lookup(b"i" * 32) == b"der"
    assert time.monotonic() - started < 1.0


def test_a_lock_that_cannot_be_taken_is_a_miss_counted_each_time_and_logged_once(
    registry: Registry,
) -> None:
    zone = registry.zone("SSL", SIZE)
    failures: list[tuple[str, str]] = []
    zone.on_error = lambda name, op: failures.append((name, op))
    with open(os.devnull, "rb") as read_only:  # a write lock needs a descriptor open to write
        zone.lock = Lock(read_only.fileno())
        assert zone.lookup(b"i" * 32) is None
        assert zone.lookup(b"i" * 32) is None
        assert not zone.store(b"i" * 32, b"der", 300)
        assert zone.ticket_keys(NOW, 300) is None
    zone.lock = Lock(zone.segment.fd)
    assert failures == [
        ("SSL", "lookup"),
        ("SSL", "lookup"),
        ("SSL", "store"),
        ("SSL", "ticket_keys"),
    ]
    lines = [message for _, message in log_lines(registry) if "failed" in message]
    assert lines == [
        'shared zone "SSL" lookup failed: fcntl(F_SETLKW) failed (9: Bad file descriptor)'
    ]


def test_the_segment_is_the_masters_alone(registry: Registry) -> None:
    info = shm_path(registry.zone("SSL", SIZE)).stat()
    assert (info.st_uid, info.st_mode & 0o777) == (os.geteuid(), 0o600)


def planted(registry: Registry) -> Path:
    return Path(segment.SHM_DIR + segment.segment_name(registry.instance, "SSL", SIZE))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another account")
def test_a_segment_of_another_account_under_the_zone_name_is_replaced_and_logged(
    registry: Registry,
) -> None:
    path = planted(registry)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    os.fchown(fd, 65534, 65534)
    os.fchmod(fd, 0o666)
    zone = registry.zone("SSL", SIZE)
    zone.store(b"i" * 32, b"secret", 300)
    assert os.fstat(fd).st_nlink == 0 and os.pread(fd, 64, 0) == b""  # theirs: unlinked, empty
    os.close(fd)
    assert (
        "alert",
        f"shared memory {zone.segment.name} was owned by uid 65534 with mode 0666, not by uid 0 "
        'with mode 0600: removed it and made a new one for shared zone "SSL"',
    ) in log_lines(registry)


def test_a_symbolic_link_under_the_zone_name_is_removed_not_followed(
    registry: Registry, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    planted(registry).symlink_to(target)
    zone = registry.zone("SSL", SIZE)
    assert not shm_path(zone).is_symlink() and target.read_bytes() == b"keep"


def _store_forever(zone: Zone, seed: int) -> None:
    n = 0
    while True:
        n += 1
        sid = (seed * 1_000_000 + n).to_bytes(8, "big") * 4
        zone.store(sid, sid * (1 + n % 8), 300)


@pytest.mark.slow
def test_workers_killed_in_a_store_loop_never_leave_a_served_torn_record(
    registry: Registry,
) -> None:
    zone = registry.zone("SSL", 64 * 1024)
    for round_ in range(30):
        pid = os.fork()
        if pid == 0:
            try:
                _store_forever(zone, round_)
            finally:
                os._exit(0)
        time.sleep(0.005 + (round_ % 5) * 0.003)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        started = time.monotonic()
        # Whatever the killed worker was doing, each served session is the one stored.
        for n in range(1, 400):
            sid = (round_ * 1_000_000 + n).to_bytes(8, "big") * 4
            der = zone.lookup(sid)
            assert der is None or der == sid * (1 + n % 8)
        assert zone.store(b"z" * 32, b"alive", 300)
        assert time.monotonic() - started < 2.0
    assert zone.stats().stores > 100
