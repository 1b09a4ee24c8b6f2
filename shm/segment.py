"""POSIX shared-memory segments, named after the mailgate instance that owns them.

A name is ``/mailgate.<instance>.<zone>.<size>``: ``<instance>`` hashes the prefix and the
configuration path, so two instances on one machine never share a zone, while a new master
started by an upgrade (same prefix, same file) finds the old master's segments. The size is
part of the name because a zone whose size changed on reload is a new, empty zone; the old
generation's workers keep the old one mapped until they exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
from dataclasses import dataclass

import posix_ipc

PREFIX = "mailgate."
SHM_DIR = "/dev/shm"  # where Linux lists POSIX shared memory, for reclaiming leftovers
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class SegmentError(Exception):
    """A segment could not be created or mapped."""


def instance_id(prefix: str, conf_path: str) -> str:
    """12 hex digits naming one mailgate instance: its prefix and configuration file."""
    digest = hashlib.sha256(f"{prefix}\0{conf_path}".encode()).hexdigest()
    return digest[:12]


def segment_name(instance: str, zone: str, size: int) -> str:
    # Zone names are nginx words; anything outside [A-Za-z0-9_-] is hex-escaped so the name
    # stays one path component and two zone names never map to one segment.
    safe = _UNSAFE.sub(lambda m: f".{ord(m.group(0)):x}.", zone)
    return f"/{PREFIX}{instance}.{safe}.{size}"


def instance_segments(instance: str) -> list[str]:
    """Names of every segment this instance has now (its own, or a crashed master's).

    An empty ``instance`` lists every mailgate segment on the machine.
    """
    start = f"{PREFIX}{instance}." if instance else PREFIX
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted("/" + entry for entry in entries if entry.startswith(start))


@dataclass(slots=True)
class Segment:
    """One mapped segment. ``created`` tells whether this call made it (so it is all zeros)."""

    name: str
    size: int
    buf: mmap.mmap
    created: bool

    @classmethod
    def open(cls, name: str, size: int) -> Segment:
        """Attach to ``name``, creating it with ``size`` bytes if it does not exist."""
        created = True
        try:
            try:
                shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
            except posix_ipc.ExistentialError:
                created = False
                shm = posix_ipc.SharedMemory(name)
                if shm.size != size:  # a torn creation; the caller re-initialises
                    os.ftruncate(shm.fd, size)
            try:
                buf = mmap.mmap(shm.fd, size)
            finally:
                shm.close_fd()
        except (posix_ipc.Error, OSError, ValueError) as err:
            raise SegmentError(f'shm_open("{name}", {size}) failed ({err})') from err
        return cls(name, size, buf, created)

    def unlink(self) -> None:
        """Remove the name; processes that mapped it keep their mapping."""
        unlink(self.name)


def unlink(name: str) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory(name)
