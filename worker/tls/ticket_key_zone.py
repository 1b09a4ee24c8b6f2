"""Session-ticket keys kept in a shared zone (no ``ssl_session_ticket_key`` files).

The keys and their rotation live in :mod:`mailgate.shm.ticket_keys`. Each worker keeps a copy
and syncs it under the zone lock only when the current key's expiry must be pushed forward or
the previous key may have expired, at most about once a second, as nginx does. A ticket whose
key name the copy does not know triggers one sync before it is refused, so a worker that has
not yet seen another worker's rotation still opens that worker's tickets.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from OpenSSL import SSL

from mailgate.shm.ticket_keys import SharedKey
from mailgate.shm.zones import Zone
from mailgate.worker.observe import metrics
from mailgate.worker.tls import tickets

clock = time.time  # seconds; the rotation tests move it


class SharedKeys:
    """This worker's copy of a zone's current, previous and next keys."""

    def __init__(self, zone: Zone, timeout: int) -> None:
        self.zone = zone
        self.timeout = timeout
        self.keys: list[SharedKey] = []
        self._native: dict[bytes, tickets.NativeKey] = {}

    def current(self, now: int, force: bool = False) -> list[SharedKey]:
        """The keys, synced with the zone when due; this copy (maybe none) if the zone's lock
        fails (the zone logs and counts that)."""
        keys = self.keys
        if force or not keys or keys[0].expire < now + self.timeout or keys[1].expire < now:
            rotations = self.zone.rotations
            synced = self.zone.ticket_keys(now, self.timeout)
            if synced is None:
                return keys
            keys = self.keys = synced
            for _ in range(self.zone.rotations - rotations):
                metrics.ticket_key_rotated(self.zone.name)
            names = {key.name for key in keys}
            self._native = {n: k for n, k in self._native.items() if n in names}
        return keys

    def native(self, key: SharedKey) -> tickets.NativeKey:
        found = self._native.get(key.name)
        if found is None:
            found = tickets.native_key(
                tickets.TicketKey(key.name, aes_key=key.aes_key, hmac_key=key.hmac_key)
            )
            self._native[key.name] = found
        return found

    def find(self, name: bytes, now: int) -> int | None:
        """Index of the key named ``name`` (0 current, 1 previous, 2 next), after a resync."""
        for force in (False, True):
            for i, key in enumerate(self.current(now, force)):
                if key.name == name:
                    return i
        return None


def install(ctx: SSL.Context, zone: Zone, timeout: int) -> SharedKeys:
    """Seal and open the tickets of ``ctx`` with the zone's keys."""
    zone.on_error = metrics.shm_error
    keys, callback = _callback(zone, timeout)
    tickets.install_callback(ctx, callback)
    return keys


# One per zone and timeout for the life of the process (like the session callbacks): every
# context of every generation on that zone shares the worker's copy of the keys.
@functools.cache
def _callback(zone: Zone, timeout: int) -> tuple[SharedKeys, Any]:
    keys = SharedKeys(zone, timeout)

    def sealing() -> tickets.NativeKey | None:
        current = keys.current(int(clock()))
        return keys.native(current[0]) if current else None

    def find(name: bytes) -> tuple[int, tickets.NativeKey] | None:
        i = keys.find(name, int(clock()))
        return None if i is None else (i, keys.native(keys.keys[i]))

    def older(index: int) -> None:
        if index == 1:  # 2 is the next key: another worker rotated before this one resynced
            metrics.ticket_previous_key(zone.name)

    callback = tickets.ticket_callback(sealing, find, older)
    return keys, callback
