"""POSIX shared-memory segments, named after the mailgate instance that owns them.

A name is ``/mailgate.<instance>.<zone>.<size>``: ``<instance>`` hashes the prefix, the
configuration path and the layout version, so two instances on one machine never share a zone,
while a new master started by an upgrade (same prefix, same file, same layout) finds the old
master's segments. The size is part of the name because a zone whose size changed on reload
is a new, empty zone; the old generation's workers keep the old one mapped until they exit.

Names are predictable and ``/dev/shm`` is writable by every account, so another account can
create a segment under our name first. A segment is used only if it is owned by this
process's effective user with mode 0600; anything else is unlinked and made anew (and the
caller logs it). Workers never open a segment by name: they inherit the master's mapping and
descriptor across ``fork()``, so the segment stays the master's user's, 0600, whatever user
the workers run as.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import re
import stat
from dataclasses import dataclass, field

import posix_ipc

from mailgate.shm import layout

PREFIX = "mailgate."
SHM_DIR = "/dev/shm"  # where Linux lists POSIX shared memory, for reclaiming leftovers
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MODE = 0o600
# Another account may re-create the name between our unlink and our create; give up after
# this many rounds rather than loop.
CREATE_ATTEMPTS = 3


class SegmentError(Exception):
    """A segment could not be created or mapped."""


def instance_id(prefix: str, conf_path: str) -> str:
    """12 hex digits naming one mailgate instance: its prefix and configuration file.

    The layout version is in it too: a binary with another layout (an upgrade across it)
    starts with empty zones instead of sharing segments it would misread.
    """
    digest = hashlib.sha256(f"{layout.VERSION}\0{prefix}\0{conf_path}".encode()).hexdigest()
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


def foreign(info: os.stat_result) -> str | None:
    """Why a segment with this ``fstat()`` is not ours to use, or None if it is."""
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and mode == MODE:
        return None
    kind = "" if stat.S_ISREG(info.st_mode) else f"a {stat.filemode(info.st_mode)[0]} file "
    return f"{kind}owned by uid {info.st_uid} with mode {mode:04o}"


@dataclass(slots=True)
class Segment:
    """One mapped segment, and its descriptor (the zone lock locks it).

    ``created`` tells whether this call made it (so it is all zeros); ``replaced`` says
    what was found under the name and removed first (another account's segment).
    """

    name: str
    size: int
    buf: mmap.mmap
    fd: int
    created: bool
    replaced: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, name: str, size: int) -> Segment:
        """Attach to ``name`` if it is ours, else create it with ``size`` bytes."""
        replaced: list[str] = []
        try:
            for _ in range(CREATE_ATTEMPTS):
                found = _open_own(name, size, replaced)
                if found is not None:
                    shm, created = found
                    break
            else:
                raise SegmentError(f'shm_open("{name}") kept finding a segment of another account')
            try:
                buf = mmap.mmap(shm.fd, size)
            except (OSError, ValueError):
                shm.close_fd()
                raise
        except SegmentError:
            raise
        except (posix_ipc.Error, OSError, ValueError) as err:
            raise SegmentError(f'shm_open("{name}", {size}) failed ({err})') from err
        return cls(name, size, buf, shm.fd, created, replaced)

    def unlink(self) -> None:
        """Remove the name; processes that mapped it keep their mapping."""
        unlink(self.name)

    def close(self) -> None:
        """Let go of the descriptor (this process's locks on it go with it)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _open_own(
    name: str, size: int, replaced: list[str]
) -> tuple[posix_ipc.SharedMemory, bool] | None:
    """``(shm, created)`` for our segment ``name``; None after removing another's."""
    created = _create(name, size)
    if created is not None:
        return created, True
    try:
        shm = posix_ipc.SharedMemory(name)
    except posix_ipc.ExistentialError:
        return None  # gone since: try creating it again
    except OSError as err:
        if err.errno != errno.ELOOP:  # shm_open() follows no symbolic link
            raise
        _remove(name, foreign(os.lstat(SHM_DIR + name)) or "a link", replaced)
        return None
    why = foreign(os.fstat(shm.fd))
    if why is not None:
        shm.close_fd()
        _remove(name, why, replaced)
        return None
    if shm.size != size:  # a torn creation; the caller re-initialises
        os.ftruncate(shm.fd, size)
    return shm, False


def _create(name: str, size: int) -> posix_ipc.SharedMemory | None:
    """A new segment ``name``, mode 0600; None when the name exists already."""
    try:
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=MODE, size=size)
    except posix_ipc.ExistentialError:
        return None
    os.fchmod(shm.fd, MODE)  # whatever the umask left of it
    return shm


def _remove(name: str, why: str, replaced: list[str]) -> None:
    replaced.append(why)
    try:
        os.unlink(SHM_DIR + name)
    except FileNotFoundError:
        return  # removed by someone else meanwhile: the name is free either way
    except OSError as err:  # not root: /dev/shm is sticky
        raise SegmentError(f'"{name}" is {why} and cannot be removed ({err.strerror})') from err


def peek(name: str, length: int) -> tuple[bytes, os.stat_result] | None:
    """The first ``length`` bytes of segment ``name`` and its ``fstat()``; None if it is gone.

    Creates nothing, maps nothing writable, and reads nothing from another account's segment
    (empty bytes), so looking at a leftover cannot be turned against this process.
    """
    try:
        shm = posix_ipc.SharedMemory(name)
    except posix_ipc.Error:
        return None
    except OSError as err:  # a symbolic link: not ours, and not to be followed
        with contextlib.suppress(OSError):
            if err.errno == errno.ELOOP:
                return b"", os.lstat(SHM_DIR + name)
        return None
    try:
        info = os.fstat(shm.fd)
        if foreign(info) is not None or info.st_size < length:
            return b"", info
        with mmap.mmap(shm.fd, length, prot=mmap.PROT_READ) as buf:
            return bytes(buf), info
    except (OSError, ValueError):
        return None
    finally:
        shm.close_fd()


def unlink(name: str) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory(name)
