"""Shared zones against another local account, and with workers that run as ``user``.

The other account is ``nobody`` (uid 65534): a small script run with that uid pre-creates
what the master will look for (a segment under the zone's predictable name, a semaphore whose
key it writes into a header) before the real master starts. The promise: the master uses no
segment it does not own with mode 0600, trusts no semaphore key read from a segment, removes
nothing a header names, and its workers share the zone whatever user they run as.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sysv_ipc

from mailgate.shm import layout, segment, zones
from mailgate.shm.zones import Header
from tests.support.master import Master
from tests.support.pki import TlsFiles
from tests.support.processes import wait_until
from tests.support.resumption import (
    TLS12,
    client_context,
    connect,
    resume_on_every_worker,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another account"),
]

NOBODY = 65534
ZONE, SIZE = "SSL", 1 << 20

CONFIG = """\
daemon off;
{user}
worker_processes {workers};
error_log {{log}} info;
pid {{pid}};
mail {{{{
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_session_cache shared:SSL:1m;
    ssl_session_tickets {tickets};
    server {{{{
        listen 127.0.0.1:{{port}} ssl;
        protocol imap;
        proxy_pass 127.0.0.1:1;
    }}}}
}}}}
"""

# Run as nobody: make a segment anyone may read and write, and fill in its header.
PRECREATE = """
import os, sys
name, size, header = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
os.fchmod(fd, 0o666)
os.ftruncate(fd, size)
os.pwrite(fd, header, 0)
"""

# Run as nobody: a semaphore of its own, taken (value 0), so whoever waits on it hangs.
OWN_SEMAPHORE = """
import sysv_ipc
print(sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, mode=0o666, initial_value=0).key)
"""


@pytest.fixture(autouse=True)
def _no_leftover_zones() -> Iterator[None]:
    """The ``mailgate`` fixture ends masters with SIGKILL, a crash: reclaim what they left."""
    yield
    for name in segment.instance_segments(""):
        zones.remove_orphan(name)


def as_nobody(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return done.stdout


def start(
    mailgate: Callable[..., Master],
    tls_files: TlsFiles,
    *,
    user: str = "",
    workers: int = 2,
    tickets: str = "off",
) -> Master:
    text = CONFIG.format(
        user=user, workers=workers, cert=tls_files.cert, key=tls_files.key, tickets=tickets
    )
    return mailgate(text=text, workers=workers)


def zone_name(tmp_path: Path, zone: str = ZONE) -> str:
    """The segment name the ``mailgate`` fixture's first master will use for ``zone``."""
    instance = segment.instance_id(str(tmp_path), str(tmp_path / "mailgate0.conf"))
    return segment.segment_name(instance, zone, SIZE)


def valid_header(sem_key: int, master: int) -> bytes:
    """A header the master accepts, naming ``sem_key`` where version 1 kept its semaphore."""
    buf = bytearray(layout.HEADER_SIZE)
    Header(SIZE, sem_key, 1, master, *layout.plan(SIZE), [master, 0, 0, 0]).write(buf)
    return bytes(buf)


def exited_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


@contextlib.contextmanager
def nobodys_semaphore() -> Iterator[int]:
    key = int(as_nobody(OWN_SEMAPHORE))
    try:
        yield key
    finally:
        with contextlib.suppress(sysv_ipc.ExistentialError):
            sysv_ipc.Semaphore(key).remove()


def resumes(master: Master, tls_files: TlsFiles) -> bool:
    ctx = client_context(tls_files, TLS12)
    ctx.options |= ssl.OP_NO_TICKET
    _, session, _ = connect(master, ctx, None)
    return connect(master, ctx, session)[0]


def test_a_segment_another_account_made_first_is_replaced_and_never_sees_a_session(
    mailgate: Callable[..., Master], tls_files: TlsFiles, tmp_path: Path
) -> None:
    name = zone_name(tmp_path)
    as_nobody(PRECREATE, name, str(SIZE), "")
    # What the other account keeps open to read the master's secrets from.
    theirs = os.open(segment.SHM_DIR + name, os.O_RDONLY)
    try:
        master = start(mailgate, tls_files, tickets="on")
        assert resumes(master, tls_files)
        ctx = client_context(tls_files, TLS12)  # a ticket: the zone's ticket keys are made
        _, session, _ = connect(master, ctx, None)
        assert connect(master, ctx, session)[0]
        assert os.pread(theirs, SIZE, 0) == bytes(SIZE)  # no session, no key, no header
    finally:
        os.close(theirs)
    ours = os.stat(segment.SHM_DIR + name)
    assert (ours.st_uid, stat.S_IMODE(ours.st_mode)) == (0, 0o600)
    assert f"shared memory {name} was owned by uid {NOBODY} with mode 0666" in master.log()


def test_a_header_naming_another_accounts_semaphore_neither_hangs_the_master_nor_is_used(
    mailgate: Callable[..., Master], tls_files: TlsFiles, tmp_path: Path
) -> None:
    with nobodys_semaphore() as key:
        header = valid_header(key, exited_pid())
        as_nobody(PRECREATE, zone_name(tmp_path), str(SIZE), header.hex())
        master = start(mailgate, tls_files)  # the fixture's deadline: a hang fails here
        assert resumes(master, tls_files)
        assert sysv_ipc.Semaphore(key).value == 0  # still held by its owner, never removed


def test_a_leftover_segment_naming_another_services_semaphore_does_not_get_it_removed(
    mailgate: Callable[..., Master], tls_files: TlsFiles, tmp_path: Path
) -> None:
    service = sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, mode=0o600, initial_value=1)
    try:
        leftover = zone_name(tmp_path, "OLD")  # no zone of the configuration: reclaimed
        header = valid_header(service.key, exited_pid())
        as_nobody(PRECREATE, leftover, str(SIZE), header.hex())
        master = start(mailgate, tls_files)
        assert wait_until(lambda: not os.path.exists(segment.SHM_DIR + leftover))
        assert sysv_ipc.Semaphore(service.key).value == 1
        assert f"removed shared memory {leftover} owned by uid {NOBODY}" in master.log()
    finally:
        with contextlib.suppress(sysv_ipc.ExistentialError):
            service.remove()


@pytest.mark.parametrize("tickets", ["off", "on"], ids=["session-ids", "shared-ticket-keys"])
def test_workers_running_as_user_share_the_zone(
    mailgate: Callable[..., Master], tls_files: TlsFiles, tickets: str
) -> None:
    master = start(mailgate, tls_files, user="user nobody nogroup;", tickets=tickets)
    assert wait_until(lambda: all(_uid(pid) == NOBODY for pid in master.workers()))
    ctx = client_context(tls_files, TLS12)
    if tickets == "off":
        ctx.options |= ssl.OP_NO_TICKET
    assert resume_on_every_worker(master, ctx) == set(master.workers())
    assert "shared zone" not in master.log()  # nothing failed, nothing was replaced


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # the effective uid
    raise AssertionError(f"no Uid in /proc/{pid}/status")
