"""The libssl callbacks and shared ticket keys on memory-BIO handshakes.

Two contexts built from one server stand for two workers: they share nothing but the zone.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from OpenSSL import SSL

from mailgate.config import model
from mailgate.shm import zones
from mailgate.shm.lock import Lock
from mailgate.worker.observe import metrics
from mailgate.worker.tls import context, native, ticket_key_zone
from tests.unit.tls.conftest import (
    Pki,
    client_context,
    handshake,
    pki,
    server_config,
    session_reused,
)

__all__ = ["pki"]  # the session fixture, re-exported for this folder

TIMEOUT = 300


def shared(pki: Pki, **settings: Any) -> model.ServerConfig:
    name = "Z" + uuid.uuid4().hex[:8]  # a zone of its own for each test
    settings.setdefault(
        "ssl_session_cache", model.SessionCache(shared_name=name, shared_size=1 << 20)
    )
    return server_config(**pki.pair(), ssl_session_timeout=float(TIMEOUT), **settings)


def zone_of(server: model.ServerConfig) -> zones.Zone:
    cache = server.ssl_session_cache
    assert cache.shared_name is not None
    return zones.registry.zone(cache.shared_name, cache.shared_size)


def resumed(one: SSL.Context, other: SSL.Context, **client: Any) -> tuple[bool, SSL.Session]:
    first, _ = handshake(one, client_context(**client))
    again, srv = handshake(other, client_context(**client), first.get_session())
    return session_reused(srv), again.get_session()


@pytest.mark.parametrize(
    ("version", "tickets", "stored"),
    [
        (SSL.TLS1_2_VERSION, False, True),  # session IDs
        (SSL.TLS1_2_VERSION, True, False),  # tickets: OpenSSL gives such sessions no ID
        (SSL.TLS1_3_VERSION, True, False),  # stateless: nothing stored
        (SSL.TLS1_3_VERSION, False, True),  # stateful TLS 1.3: stored by ID
    ],
)
def test_session_resumes_on_another_worker(
    pki: Pki, version: int, tickets: bool, stored: bool
) -> None:
    server = shared(pki, ssl_session_tickets=tickets)
    one, other = context.build_context(server), context.build_context(server)
    ok, _ = resumed(one, other, max_version=version)
    assert ok
    assert (zone_of(server).stats().stores > 0) is stored


def test_builtin_and_shared_keep_both(pki: Pki) -> None:
    server = shared(pki, ssl_session_tickets=False)
    cache = server.ssl_session_cache
    both = model.SessionCache(
        builtin=True, shared_name=cache.shared_name, shared_size=cache.shared_size
    )
    server = server_config(**pki.pair(), ssl_session_cache=both, ssl_session_tickets=False)
    assert resumed(context.build_context(server), context.build_context(server))[0]


def test_removed_session_is_gone_from_the_zone(pki: Pki) -> None:
    server = shared(pki, ssl_session_tickets=False)
    ctx = context.build_context(server)
    client, srv = handshake(ctx, client_context(max_version=SSL.TLS1_2_VERSION))
    ssl_lib = native.libraries()[1]
    ssl_lib.SSL_CTX_remove_session(
        native.ctx_ptr(ctx), ssl_lib.SSL_get_session(native.ssl_ptr(srv))
    )
    _, again = handshake(ctx, client_context(max_version=SSL.TLS1_2_VERSION), client.get_session())
    assert not session_reused(again)


def test_zone_keys_seal_tickets_for_every_worker(pki: Pki) -> None:
    server = shared(pki)
    assert resumed(context.build_context(server), context.build_context(server))[0]


def ticket_name(session: SSL.Session) -> bytes:
    ffi, ssl_lib, _ = native.libraries()
    data, size = ffi.new("const unsigned char **"), ffi.new("size_t *")
    ssl_lib.SSL_SESSION_get0_ticket(native.session_ptr(session), data, size)
    return bytes(ffi.buffer(data[0], 16))


def test_ticket_under_the_previous_key_resumes_and_is_renewed(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(ticket_key_zone, "clock", lambda: now[0])
    server = shared(pki)
    one, other = context.build_context(server), context.build_context(server)
    tls12 = client_context(max_version=SSL.TLS1_2_VERSION)
    first, _ = handshake(one, tls12)
    old = first.get_session()
    now[0] += TIMEOUT + 2  # the previous key expired: rotate, the first key is now previous
    again, srv = handshake(other, client_context(max_version=SSL.TLS1_2_VERSION), old)
    assert session_reused(srv)
    renewed = again.get_session()
    assert ticket_name(renewed) != ticket_name(old)  # renewed under the current key
    now[0] += 2 * TIMEOUT + 4  # two rotations later the first key is gone
    _, srv = handshake(one, client_context(max_version=SSL.TLS1_2_VERSION), old)
    assert not session_reused(srv)


def test_a_zone_whose_lock_fails_counts_every_failed_lookup_and_store(pki: Pki) -> None:
    server = shared(pki, ssl_session_tickets=False)
    one, other = context.build_context(server), context.build_context(server)
    zone = zone_of(server)
    failed = metrics.families().shm_errors
    with open("/dev/null", "rb") as read_only:
        zone.lock = Lock(read_only.fileno())
        ok, _ = resumed(one, other, max_version=SSL.TLS1_2_VERSION)
    zone.lock = Lock(zone.segment.fd)
    assert not ok  # the lookup failed: a full handshake, which stored (failed) again
    assert failed.labels(zone.name, "lookup")._value.get() == 1
    assert failed.labels(zone.name, "store")._value.get() == 2
