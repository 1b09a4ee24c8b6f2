"""Shared zones: a segment, its lock and its header, and the process-wide table of them.

The master creates or attaches every zone before it forks (:meth:`Registry.prepare`), so the
workers inherit the mapping and the descriptor they lock (``lock.py``): they never open a
segment by name, and it stays the master's user's, mode 0600, whatever ``user`` they run as.
A reload keeps a zone whose name and size are unchanged; a new master started by an upgrade
attaches to the segments of the old one, because segment names depend only on the instance
(prefix, configuration path, layout version). Each segment keeps
a small table of the masters attached to it: the last one to leave unlinks it, so a cold stop
removes it, an upgrade does not, and the next start reclaims what a crashed master left.
"""

from __future__ import annotations

import atexit
import os
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from mailgate.shm import layout, session_ring, ticket_keys
from mailgate.shm.layout import FIXED
from mailgate.shm.lock import Lock, LockError
from mailgate.shm.segment import (
    Segment,
    SegmentError,
    foreign,
    instance_segments,
    peek,
    segment_name,
    unlink,
)

WARN_INTERVAL = 1  # seconds between "could not allocate" warnings per zone, as nginx
# Seconds between two "failed" lines of one zone in one process: a broken lock fails every
# connection, and the log must not grow by a line per connection.
ERROR_INTERVAL = 60.0


class ZoneError(Exception):
    """A zone could not be created or attached."""


class Log(Protocol):
    """What a zone logs through (the master's ``ErrorLog`` fits)."""

    def alert(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def notice(self, message: str) -> None: ...


class PendingLog:
    """Holds messages until the master's error log exists (zones are made before it)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def alert(self, message: str) -> None:
        self.lines.append(("alert", message))

    def warn(self, message: str) -> None:
        self.lines.append(("warn", message))

    def notice(self, message: str) -> None:
        self.lines.append(("notice", message))


@dataclass(slots=True)
class Header:
    """The fixed part of the header (``layout`` bytes 0..64)."""

    size: int
    reserved: int  # version 1's semaphore key; written 0, never read
    generation: int
    owner: int
    data_offset: int
    capacity: int
    buckets: int
    masters: list[int]

    @classmethod
    def read(cls, buf: session_ring.Buffer, size: int) -> Header | None:
        """The header if it is ours, intact and made for ``size``; else None."""
        fields = FIXED.unpack_from(buf, 0)
        magic, version, crc = fields[0], fields[1], fields[2]
        raw = bytearray(buf[0 : FIXED.size])
        raw[layout.FIXED_CRC_AT : layout.FIXED_CRC_AT + 4] = bytes(4)
        if magic != layout.MAGIC or version != layout.VERSION or crc != zlib.crc32(raw):
            return None
        size_, reserved, generation, owner, data_offset, capacity, buckets = fields[3:10]
        header = cls(
            size_, reserved, generation, owner, data_offset, capacity, buckets, list(fields[10:])
        )
        if header.size != size or (header.data_offset, header.capacity, header.buckets) != (
            layout.plan(size)
        ):
            return None
        return header

    def write(self, buf: session_ring.Buffer) -> None:
        fields = (
            layout.MAGIC,
            layout.VERSION,
            0,
            self.size,
            self.reserved,
            self.generation,
            self.owner,
            self.data_offset,
            self.capacity,
            self.buckets,
            *self.masters,
        )
        raw = bytearray(FIXED.pack(*fields))
        raw[layout.FIXED_CRC_AT : layout.FIXED_CRC_AT + 4] = zlib.crc32(raw).to_bytes(4, "little")
        buf[0 : FIXED.size] = raw


def _ignore(zone: str, op: str) -> None:
    """The default :attr:`Zone.on_error`: a process without metrics (the master, tests)."""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Zone:
    """One ``shared:NAME:SIZE`` zone as every process of the instance sees it."""

    def __init__(self, name: str, segment: Segment, lock: Lock, header: Header, log: Log) -> None:
        self.name = name
        self.last_evicted = 0  # sessions the latest store() pushed out (for the metrics)
        self.rotations = 0  # ticket key rotations this process made (for the metrics)
        self.segment = segment
        self.lock = lock
        self.header = header
        self.log = log
        # Told of every failed operation as (zone, op): the worker counts them in a metric.
        self.on_error: Callable[[str, str], None] = _ignore
        self._failures = 0  # failures not yet reported in the log
        self._reported = float("-inf")  # monotonic time of the last "failed" line
        self.ring = session_ring.SessionRing(
            segment.buf, header.data_offset, header.capacity, header.buckets
        )

    @classmethod
    def attach(cls, name: str, size: int, instance: str, log: Log) -> Zone:
        """Create the zone's segment, or attach to it (reload, upgrade, crashed master)."""
        try:
            segment = Segment.open(segment_name(instance, name, size), size)
        except SegmentError as err:
            raise ZoneError(f'could not create shared zone "{name}": {err}') from err
        for why in segment.replaced:
            log.alert(
                f"shared memory {segment.name} was {why}, not by uid {os.geteuid()} with "
                f'mode 0600: removed it and made a new one for shared zone "{name}"'
            )
        lock = Lock(segment.fd)
        try:
            with lock:
                header = Header.read(segment.buf, size)
                if header is None:
                    if not segment.created:
                        log.alert(
                            f'shared zone "{name}" in {segment.name} has a corrupt header, '
                            "re-initialising it"
                        )
                    header = _initialise(segment.buf, size, 1)
            zone = cls(name, segment, lock, header, log)
            zone._join()
        except LockError as err:
            segment.close()
            raise ZoneError(f'could not create shared zone "{name}": {err}') from err
        return zone

    def _join(self, replacing: int = 0) -> None:
        """Enter this master in the segment's table of masters; reclaim it if they are gone.

        ``replacing``: the pid this process had before ``daemon on`` detached it.
        """
        me = os.getpid()
        with self.lock:
            header = self._checked()
            others = [pid for pid in header.masters if pid and pid not in (me, replacing)]
            if others and not any(_alive(pid) for pid in others):
                self.log.notice(
                    f'shared zone "{self.name}" reclaimed from the exited master process '
                    f"{header.owner}"
                )
            live = [pid for pid in others if _alive(pid)][: layout.MASTER_SLOTS - 1]
            header.masters = [*live, me, *[0] * layout.MASTER_SLOTS][: layout.MASTER_SLOTS]
            header.owner = me
            header.write(self.segment.buf)
            self.header = header

    def leave(self) -> bool:
        """This master stops using the zone; unlink it if no other master uses it."""
        me = os.getpid()
        with self.lock:
            header = self._checked()
            others = [pid for pid in header.masters if pid and pid != me and _alive(pid)]
            header.masters = [*others, *[0] * layout.MASTER_SLOTS][: layout.MASTER_SLOTS]
            if others and header.owner == me:
                header.owner = others[-1]
            header.write(self.segment.buf)
        if not others:
            self.segment.unlink()
        self.segment.close()
        return not others

    def _checked(self) -> Header:
        """The header, re-initialised (and logged) if it is corrupt. Call under the lock."""
        header = Header.read(self.segment.buf, self.segment.size)
        if header is None:
            self.log.alert(f'shared zone "{self.name}" has a corrupt header, re-initialising it')
            header = _initialise(
                self.segment.buf,
                self.segment.size,
                self.header.generation + 1,
                masters=self.header.masters,
            )
        self.header = header
        return header

    def _after(self, resets: int) -> None:
        if self.ring.reset_count != resets:
            self.log.alert(f'shared zone "{self.name}" had a torn ring state, emptied it')

    def _failed(self, op: str, err: Exception) -> None:
        """``op`` could not take the lock: count it, and log it once per ``ERROR_INTERVAL``.

        The caller then does without the zone (a miss, nothing stored): sessions do not
        resume, which the line and ``mailgate_shm_errors_total`` make visible.
        """
        self.on_error(self.name, op)
        self._failures += 1
        now = time.monotonic()
        if now - self._reported < ERROR_INTERVAL:
            return
        self._reported = now
        also = f", {self._failures - 1} more since the last report" if self._failures > 1 else ""
        self._failures = 0
        self.log.alert(f'shared zone "{self.name}" {op} failed: {err}{also}')

    # -- sessions -----------------------------------------------------------------------

    def lookup(self, sid: bytes, now: int | None = None) -> bytes | None:
        """The DER of a stored, unexpired session with ID ``sid``."""
        resets = self.ring.reset_count
        try:
            with self.lock:
                self._checked()
                der = self.ring.lookup(sid, int(time.time()) if now is None else now)
        except LockError as err:
            self._failed("lookup", err)
            return None
        self._after(resets)
        return der

    def store(self, sid: bytes, der: bytes, timeout: int, now: int | None = None) -> bool:
        """Keep a session for ``timeout`` seconds; warn (once a second) when it evicts."""
        now = int(time.time()) if now is None else now
        resets = self.ring.reset_count
        warn = False
        try:
            with self.lock:
                self._checked()
                done = self.ring.store(sid, der, now + timeout, now)
                self.last_evicted = done.evicted
                if done.evicted:
                    values = list(layout.STATS.unpack_from(self.segment.buf, layout.STATS_AT))
                    if now - values[5] >= WARN_INTERVAL:
                        values[5] = now
                        layout.STATS.pack_into(self.segment.buf, layout.STATS_AT, *values)
                        warn = True
        except LockError as err:
            self._failed("store", err)
            return False
        self._after(resets)
        if warn:
            self.log.warn(
                f'could not allocate new session in SSL session shared cache "{self.name}", '
                "the oldest sessions were dropped"
            )
        return done.stored

    def remove(self, sid: bytes) -> bool:
        """Forget ``sid``: OpenSSL dropped it (a bad, expired or unfinished session)."""
        try:
            with self.lock:
                self._checked()
                return self.ring.remove(sid)
        except LockError as err:
            self._failed("remove", err)
            return False

    def stats(self) -> session_ring.Stats:
        with self.lock:
            return self.ring.stats()

    def usage(self) -> tuple[int, int]:
        """(sessions held, log bytes in use), for the metrics gauges.

        The count is stores less evictions and removals, so an expired session counts until
        its space is reused, and a session stored again under its ID counts twice.
        """
        try:
            with self.lock:
                self._checked()
                stats = self.ring.stats()
                used = self.ring.used_bytes()
        except LockError as err:
            self._failed("usage", err)
            return 0, 0
        return max(0, stats.stores - stats.evictions - stats.removes), used

    # -- ticket keys --------------------------------------------------------------------

    def ticket_keys(self, now: int, timeout: int) -> list[ticket_keys.SharedKey] | None:
        """The current, previous and next ticket keys, rotated as of ``now``; None when the
        lock cannot be taken (counted and logged)."""
        try:
            with self.lock:
                self._checked()
                before = ticket_keys.read(self.segment.buf)
                keys, torn = ticket_keys.rotate(self.segment.buf, now, timeout)
        except LockError as err:
            self._failed("ticket_keys", err)
            return None
        if before is not None and before[0].expire and before[0].name != keys[0].name:
            self.rotations += 1  # this process rotated them (under the lock: exactly one does)
        if torn:
            self.log.alert(f'shared zone "{self.name}" had torn ticket keys, made new ones')
        return keys


def _initialise(
    buf: session_ring.Buffer,
    size: int,
    generation: int,
    masters: list[int] | None = None,
) -> Header:
    data_offset, capacity, buckets = layout.plan(size)
    buf[layout.STATE_AT : layout.HEADER_SIZE] = bytes(layout.HEADER_SIZE - layout.STATE_AT)
    session_ring.initialise(buf, data_offset, capacity, buckets)
    header = Header(
        size,
        0,
        generation,
        os.getpid(),
        data_offset,
        capacity,
        buckets,
        list(masters or [0] * layout.MASTER_SLOTS),
    )
    header.write(buf)
    return header


class Registry:
    """Every zone this process made or attached, by ``(name, size)``."""

    def __init__(self) -> None:
        self.zones: dict[tuple[str, int], Zone] = {}
        self.instance = f"p{os.getpid()}"  # until the master names the instance
        self.log: Log = PendingLog()
        self._pid = os.getpid()
        self._reclaimed = False

    def prepare(self, instance: str, wanted: Iterable[tuple[str, int]]) -> None:
        """Create or attach each wanted zone; reuse those already attached (reload)."""
        self.instance = instance
        wanted = list(dict.fromkeys(wanted))
        for name, size in wanted:
            self.zone(name, size)
        if not self._reclaimed:
            self._reclaimed = True
            self._reclaim({zone.segment.name for zone in self.zones.values()})

    def _reclaim(self, keep: set[str]) -> None:
        # Segments of this instance that no configured zone uses: left by a crashed master,
        # or by a size since changed. A live master's (an upgrade in progress) are left alone.
        for name in instance_segments(self.instance):
            if name not in keep and (why := remove_orphan(name)) is not None:
                self.log.notice(f"removed shared memory {name} {why}")

    def zone(self, name: str, size: int) -> Zone:
        """The zone ``name`` of ``size`` bytes, attached on first use."""
        zone = self.zones.get((name, size))
        if zone is None:
            zone = Zone.attach(name, size, self.instance, self.log)
            self.zones[(name, size)] = zone
        return zone

    def started(self, log: Log) -> None:
        """The master runs: log through ``log`` (first what was said before it existed) and
        enter the zones under this pid, which ``daemon on`` may have changed.
        """
        previous, self._pid = self._pid, os.getpid()
        if previous != self._pid:
            for zone in self.zones.values():
                zone._join(replacing=previous)
        pending = self.log
        self.log = log
        for zone in self.zones.values():
            zone.log = log
        if isinstance(pending, PendingLog):
            for level, message in pending.lines:
                getattr(log, level)(message)

    def release(self) -> None:
        """Leave every zone (a stopping master); the last master out unlinks each."""
        if os.getpid() != self._pid:
            return  # a forked worker: the zones are the master's to release
        zones, self.zones = self.zones, {}
        for zone in zones.values():
            try:
                zone.leave()
            except Exception as err:  # stopping: report and go on
                self.log.alert(f'could not release shared zone "{zone.name}": {err!r}')


def remove_orphan(name: str) -> str | None:
    """Unlink segment ``name`` if no master that used it is alive; returns why, or None.

    One that is not ours (another account made it, see ``segment.py``) is unlinked unread.
    Nothing else is removed: no semaphore, nothing a header names.
    """
    found = peek(name, layout.HEADER_SIZE)
    if found is None:
        return None
    head, info = found
    why = foreign(info)
    if why is None:
        header = Header.read(head, info.st_size) if len(head) == layout.HEADER_SIZE else None
        if header is not None and any(_alive(pid) for pid in header.masters):
            return None
    unlink(name)
    return "left by an exited master process" if why is None else f"{why}, not ours"


registry = Registry()
# Also for exits that never reach the master's stop (``mailgate -t``, a bind failure).
atexit.register(registry.release)
