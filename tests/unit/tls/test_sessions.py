"""ssl_session_cache, ssl_session_timeout and the session ID context."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker import tls, tls_verify
from tests.unit.tls.conftest import (
    Connect,
    Pki,
    client_context,
    handshake,
    server_config,
    session_reused,
)

TLS12_NO_TICKET = {"max_version": SSL.TLS1_2_VERSION, "no_ticket": True}


def resumes(ctx: SSL.Context, again: SSL.Context | None = None, **client: Any) -> bool:
    """Handshake on ``ctx``, then offer that session to ``again`` (default: ``ctx``)."""
    first, _ = handshake(ctx, client_context(**client))
    _, srv = handshake(again or ctx, client_context(**client), first.get_session())
    return session_reused(srv)


def cache(**settings: Any) -> model.SessionCache:
    return model.SessionCache(**settings)


def test_builtin_cache_resumes_a_tls12_session_id(pki: Pki) -> None:
    ctx = tls.build_context(server_config(**pki.pair(), ssl_session_cache=cache(builtin=True)))
    assert resumes(ctx, **TLS12_NO_TICKET)


def test_cache_off_never_resumes_a_session_id(pki: Pki) -> None:
    ctx = tls.build_context(server_config(**pki.pair(), ssl_session_cache=cache(off=True)))
    assert not resumes(ctx, **TLS12_NO_TICKET)


def test_cache_none_issues_ids_but_stores_nothing(pki: Pki) -> None:
    ctx = tls.build_context(server_config(**pki.pair()))
    first, _ = handshake(ctx, client_context(**TLS12_NO_TICKET))
    assert first.get_session() is not None
    assert not resumes(ctx, **TLS12_NO_TICKET)


def test_shared_cache_resumes_on_another_context(pki: Pki) -> None:
    server = server_config(
        **pki.pair(), ssl_session_cache=cache(shared_name="SSL", shared_size=1 << 20)
    )
    assert resumes(tls.build_context(server), tls.build_context(server), **TLS12_NO_TICKET)


def test_default_tickets_resume_without_a_cache(pki: Pki) -> None:
    assert resumes(tls.build_context(server_config(**pki.pair())))


def test_session_timeout_is_applied(pki: Pki) -> None:
    ctx = tls.build_context(server_config(**pki.pair(), ssl_session_timeout=42.0))
    assert ctx.get_timeout() == 42


def test_removed_session_does_not_resume(pki: Pki) -> None:
    ctx = tls.build_context(server_config(**pki.pair(), ssl_session_cache=cache(builtin=True)))
    first, srv = handshake(ctx, client_context(**TLS12_NO_TICKET))
    tls_verify.remove_session(srv)
    _, again = handshake(ctx, client_context(**TLS12_NO_TICKET), first.get_session())
    assert not session_reused(again)


def key_file(tmp_path: Path) -> str:
    path = tmp_path / "ticket.key"
    path.write_bytes(os.urandom(80))
    return str(path)


def test_ticket_resumes_on_another_context_of_the_same_server(pki: Pki, tmp_path: Path) -> None:
    server = server_config(**pki.pair(), ssl_session_ticket_key=(key_file(tmp_path),))
    assert resumes(tls.build_context(server), tls.build_context(server))


def test_ticket_never_resumes_on_a_server_with_other_certificates(pki: Pki, tmp_path: Path) -> None:
    keys = (key_file(tmp_path),)
    rsa = tls.build_context(server_config(**pki.pair("rsa"), ssl_session_ticket_key=keys))
    ecdsa = tls.build_context(server_config(**pki.pair("ecdsa"), ssl_session_ticket_key=keys))
    assert not resumes(rsa, ecdsa)


def test_ticket_never_resumes_on_a_server_with_other_client_cas(pki: Pki, tmp_path: Path) -> None:
    common = {**pki.pair(), "ssl_session_ticket_key": (key_file(tmp_path),)}
    verify = {"ssl_verify_client": model.VerifyClient.OPTIONAL}
    one = tls.build_context(server_config(**common, **verify, ssl_client_certificate=str(pki.ca)))
    other = tls.build_context(
        server_config(**common, **verify, ssl_client_certificate=str(pki.other_ca))
    )
    assert not resumes(one, other)


def test_s_client_resumes_a_tls12_session_from_the_builtin_cache(
    pki: Pki, connect: Connect, tmp_path: Path
) -> None:
    server = server_config(**pki.pair(), ssl_session_cache=cache(builtin=True))
    session = str(tmp_path / "session.pem")
    args = ("-tls1_2", "-no_ticket")
    output, first = connect(server, *args, "-sess_out", session)
    assert "New, TLSv1.2" in output and not first.reused
    output, second = connect(server, *args, "-sess_in", session)
    assert "Reused, TLSv1.2" in output and second.reused


def test_s_client_resumes_a_tls13_ticket(pki: Pki, connect: Connect, tmp_path: Path) -> None:
    server = server_config(**pki.pair())
    session = str(tmp_path / "session.pem")
    connect(server, "-sess_out", session)
    output, seen = connect(server, "-sess_in", session)
    assert "Reused, TLSv1.3" in output and seen.reused
