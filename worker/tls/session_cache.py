"""``ssl_session_cache shared:NAME:SIZE``: OpenSSL's session callbacks on a shared zone.

A session goes out through the new-session callback (DER from ``i2d_SSL_SESSION``), comes back
through the get-session callback (``d2i_SSL_SESSION``) and is dropped through the remove
callback, as ``ngx_ssl_new_session`` / ``ngx_ssl_get_cached_session`` / ``ngx_ssl_remove_session``
do. Reference counts: the new callback returns 0, so OpenSSL keeps its own reference and we
keep only bytes; the get callback sets ``*copy = 0``, so OpenSSL takes over the one reference
that ``d2i_SSL_SESSION`` gave us instead of adding another (which would leak the session).
"""

from __future__ import annotations

import functools
import time
from typing import Any

from OpenSSL import SSL

from mailgate.config import model
from mailgate.shm import layout
from mailgate.shm.zones import Zone
from mailgate.worker.observe import metrics
from mailgate.worker.tls import native

TLS1_3_VERSION = 0x0304
SESS_CACHE_NO_INTERNAL = 0x0300  # NO_INTERNAL_LOOKUP | NO_INTERNAL_STORE
SSL_CTRL_SET_SESS_CACHE_SIZE = 42


def install(ctx: SSL.Context, server: model.ServerConfig, zone: Zone) -> None:
    """Keep the sessions of ``ctx`` in ``zone``; OpenSSL's own cache only with ``builtin``."""
    ssl_lib = native.libraries()[1]
    cache = server.ssl_session_cache
    zone.on_error = metrics.shm_error  # a failed lock is counted, not only logged
    if cache.builtin:
        ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        set_cache_size(ctx, cache.builtin_size)
    else:
        ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER | SESS_CACHE_NO_INTERNAL)
    # With tickets on, a TLS 1.3 resumption is stateless: nothing to store (as nginx).
    new_cb, get_cb, remove_cb = _callbacks(
        zone, int(server.ssl_session_timeout), store_tls13=not server.ssl_session_tickets
    )
    pointer = native.ctx_ptr(ctx)
    ssl_lib.SSL_CTX_sess_set_new_cb(pointer, new_cb)
    ssl_lib.SSL_CTX_sess_set_get_cb(pointer, get_cb)
    ssl_lib.SSL_CTX_sess_set_remove_cb(pointer, remove_cb)


def set_cache_size(ctx: SSL.Context, sessions: int) -> None:
    """The size of OpenSSL's own (``builtin``) cache, in sessions."""
    ffi, ssl_lib, _ = native.libraries()  # SSL_CTX_sess_set_cache_size() is a macro over this
    ssl_lib.SSL_CTX_ctrl(native.ctx_ptr(ctx), SSL_CTRL_SET_SESS_CACHE_SIZE, sessions, ffi.NULL)


# Cached for the life of the process, not kept alive with the context: SSL_CTX_free() calls
# the remove callback for every session in OpenSSL's internal cache (``builtin`` plus
# ``shared``), and by then the Python context, and anything tied to it, is already gone.
# One set per zone and settings, so reloads do not pile them up.
@functools.cache
def _callbacks(zone: Zone, timeout: int, *, store_tls13: bool) -> tuple[Any, Any, Any]:
    ffi, ssl_lib, _ = native.libraries()

    def new_session(ssl: Any, session: Any) -> int:
        if not store_tls13 and ssl_lib.SSL_version(ssl) == TLS1_3_VERSION:
            return 0
        sid = session_id(session)
        size = ssl_lib.i2d_SSL_SESSION(session, ffi.NULL)
        if not sid or not 0 < size <= layout.MAX_DER:
            return 0
        der = ffi.new("unsigned char[]", size)
        ssl_lib.i2d_SSL_SESSION(session, ffi.new("unsigned char **", der))
        if zone.store(sid, bytes(ffi.buffer(der, size)), timeout):
            metrics.session_cache_store(zone.name)
            if zone.last_evicted:
                metrics.session_cache_evicted(zone.name, zone.last_evicted)
            _report_usage(zone)
        return 0  # we kept no reference: OpenSSL must not count one for us

    def get_session(ssl: Any, sid: Any, length: int, copy: Any) -> Any:
        copy[0] = 0
        der = zone.lookup(bytes(ffi.buffer(sid, length)))
        metrics.session_cache_lookup(zone.name, der is not None)
        if der is None:
            return ffi.NULL
        data = ffi.new("unsigned char[]", der)
        return ssl_lib.d2i_SSL_SESSION(ffi.NULL, ffi.new("const unsigned char **", data), len(der))

    def remove_session(ssl_ctx: Any, session: Any) -> None:
        sid = session_id(session)
        if sid:
            zone.remove(sid)

    # An exception inside a callback must not reach OpenSSL: no store, a miss, no removal.
    return (
        ffi.callback("int(SSL *, SSL_SESSION *)", new_session, error=0),
        ffi.callback("SSL_SESSION *(SSL *, const unsigned char *, int, int *)", get_session),
        ffi.callback("void(SSL_CTX *, SSL_SESSION *)", remove_session),
    )


_usage_reported: dict[str, float] = {}


def _report_usage(zone: Zone) -> None:
    """Refresh the zone's entries/bytes gauges, at most once a second per worker."""
    now = time.monotonic()
    if now - _usage_reported.get(zone.name, 0.0) < 1.0:
        return
    _usage_reported[zone.name] = now
    metrics.session_cache_usage(zone.name, *zone.usage())


def session_id(session: Any) -> bytes:
    """The session's ID, or empty when it has none or one longer than nginx caches."""
    ffi, ssl_lib, _ = native.libraries()
    length = ffi.new("unsigned int *")
    data = ssl_lib.SSL_SESSION_get_id(session, length)
    if data == ffi.NULL or not 0 < length[0] <= layout.MAX_ID:
        return b""
    return bytes(ffi.buffer(data, length[0]))
