"""``ssl_session_ticket_key``: nginx's key files, made a context's ticket keys.

A 48-byte file is ``name[16] | aes[16] | hmac[16]`` (AES-128-CBC); an 80-byte file is
``name[16] | hmac[32] | aes[32]`` (AES-256-CBC) -- the field order differs, as in nginx. The
HMAC is SHA-256 either way. The first key encrypts new tickets, every key decrypts, and a
ticket opened with any other key is renewed so that clients move to the current key
(the callback itself is in :mod:`mailgate.worker.tls.tickets`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from OpenSSL import SSL

from mailgate.worker.observe import metrics
from mailgate.worker.tls import native, tickets
from mailgate.worker.tls.errors import TLSConfigError


def parse_key(data: bytes, path: str) -> tickets.TicketKey:
    """Split a key file's bytes by its size, as nginx does."""
    if len(data) == 48:
        return tickets.TicketKey(data[:16], aes_key=data[16:32], hmac_key=data[32:48])
    if len(data) == 80:
        return tickets.TicketKey(data[:16], aes_key=data[48:80], hmac_key=data[16:48])
    raise TLSConfigError(f'"{path}" must be 48 or 80 bytes')


def load_keys(paths: Sequence[str]) -> list[tickets.TicketKey]:
    """Read every ``ssl_session_ticket_key`` file, in the configured order."""
    keys = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size not in (48, 80):
                    raise TLSConfigError(f'"{path}" must be 48 or 80 bytes')
                data = fh.read(81)
        except OSError as err:
            raise TLSConfigError(f'open() "{path}" failed ({err.errno}: {err.strerror})') from err
        keys.append(parse_key(data, path))
    return keys


def install(ctx: SSL.Context, keys: Sequence[tickets.TicketKey]) -> None:
    """Make ``ctx`` seal and open tickets with ``keys`` (``keys[0]`` seals)."""
    if not keys:
        return
    prepared = [tickets.native_key(key) for key in keys]
    index: dict[bytes, int] = {}
    for i, key in enumerate(prepared):
        index.setdefault(key.name, i)  # a repeated name: the earlier file wins, as in nginx

    def find(name: bytes) -> tuple[int, tickets.NativeKey] | None:
        i = index.get(name)
        return None if i is None else (i, prepared[i])

    def older(_index: int) -> None:
        metrics.ticket_previous_key("files")

    callback = tickets.ticket_callback(lambda: prepared[0], find, older)
    tickets.install_callback(ctx, callback)
    native.keep_alive(ctx, callback, prepared)
