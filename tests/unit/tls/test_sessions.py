"""ssl_session_cache, ssl_session_timeout and the session ID context."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker.tls import client_cert, context, verify_setup
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
    ctx = context.build_context(server_config(**pki.pair(), ssl_session_cache=cache(builtin=True)))
    assert resumes(ctx, **TLS12_NO_TICKET)


def test_cache_off_never_resumes_a_session_id(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair(), ssl_session_cache=cache(off=True)))
    assert not resumes(ctx, **TLS12_NO_TICKET)


def test_cache_none_issues_ids_but_stores_nothing(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair()))
    first, _ = handshake(ctx, client_context(**TLS12_NO_TICKET))
    assert first.get_session() is not None
    assert not resumes(ctx, **TLS12_NO_TICKET)


def test_shared_cache_resumes_on_another_context(pki: Pki) -> None:
    server = server_config(
        **pki.pair(), ssl_session_cache=cache(shared_name="SSL", shared_size=1 << 20)
    )
    assert resumes(context.build_context(server), context.build_context(server), **TLS12_NO_TICKET)


def test_default_tickets_resume_without_a_cache(pki: Pki) -> None:
    assert resumes(context.build_context(server_config(**pki.pair())))


def test_session_timeout_is_applied(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair(), ssl_session_timeout=42.0))
    assert ctx.get_timeout() == 42


def test_removed_session_does_not_resume(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair(), ssl_session_cache=cache(builtin=True)))
    first, srv = handshake(ctx, client_context(**TLS12_NO_TICKET))
    client_cert.remove_session(srv)
    _, again = handshake(ctx, client_context(**TLS12_NO_TICKET), first.get_session())
    assert not session_reused(again)


def key_file(tmp_path: Path) -> str:
    path = tmp_path / "ticket.key"
    path.write_bytes(os.urandom(80))
    return str(path)


def test_ticket_resumes_on_another_context_of_the_same_server(pki: Pki, tmp_path: Path) -> None:
    server = server_config(**pki.pair(), ssl_session_ticket_key=(key_file(tmp_path),))
    assert resumes(context.build_context(server), context.build_context(server))


def test_ticket_never_resumes_on_a_server_with_other_certificates(pki: Pki, tmp_path: Path) -> None:
    keys = (key_file(tmp_path),)
    rsa = context.build_context(server_config(**pki.pair("rsa"), ssl_session_ticket_key=keys))
    ecdsa = context.build_context(server_config(**pki.pair("ecdsa"), ssl_session_ticket_key=keys))
    assert not resumes(rsa, ecdsa)


def test_ticket_never_resumes_on_a_server_with_other_client_cas(pki: Pki, tmp_path: Path) -> None:
    common = {**pki.pair(), "ssl_session_ticket_key": (key_file(tmp_path),)}
    verify = {"ssl_verify_client": model.VerifyClient.OPTIONAL}
    one = context.build_context(
        server_config(**common, **verify, ssl_client_certificate=str(pki.ca))
    )
    other = context.build_context(
        server_config(**common, **verify, ssl_client_certificate=str(pki.other_ca))
    )
    assert not resumes(one, other)


# -- the client-certificate policy is part of the session ID context (CVE-2025-23419) ---------

ON = model.VerifyClient.ON


def policy(pki: Pki, keys: tuple[str, ...], **settings: Any) -> model.ServerConfig:
    """A verifying server sharing ``keys``: the client CA, and whatever ``settings`` add."""
    settings.setdefault("ssl_verify_client", ON)
    settings.setdefault("ssl_client_certificate", str(pki.ca))
    return server_config(**pki.pair(), ssl_session_ticket_key=keys, **settings)


@pytest.mark.parametrize(
    "other",
    [
        {"ssl_trusted_certificate": "other_ca"},
        {"ssl_crl": "crl"},
        {"ssl_verify_client": model.VerifyClient.OPTIONAL},
        {"ssl_verify_client": model.VerifyClient.OPTIONAL_NO_CA},
        {"ssl_verify_depth": 2},
    ],
    ids=["trusted-certificate", "crl", "optional", "optional-no-ca", "depth"],
)
def test_ticket_never_resumes_on_a_server_with_another_verification_policy(
    pki: Pki, tmp_path: Path, other: dict[str, Any]
) -> None:
    keys = (key_file(tmp_path),)
    resolved = {k: str(getattr(pki, v)) if isinstance(v, str) else v for k, v in other.items()}
    one = context.build_context(policy(pki, keys))
    another = context.build_context(policy(pki, keys, **resolved))
    assert not resumes(one, another)
    assert not resumes(another, one)


def test_ticket_resumes_on_another_server_with_the_same_verification_policy(
    pki: Pki, tmp_path: Path
) -> None:
    keys = (key_file(tmp_path),)
    settings = {"ssl_trusted_certificate": str(pki.other_ca), "ssl_crl": str(pki.crl)}
    one = context.build_context(policy(pki, keys, **settings))
    another = context.build_context(policy(pki, keys, **settings))
    assert resumes(one, another)


def test_ticket_never_resumes_after_the_crl_file_changed_in_place(pki: Pki, tmp_path: Path) -> None:
    """The file's contents count, not its name: a reload with a new CRL ends old sessions."""
    keys, crl = (key_file(tmp_path),), tmp_path / "crl.pem"
    crl.write_bytes(pki.crl.read_bytes())
    before = context.build_context(policy(pki, keys, ssl_crl=str(crl)))
    crl.write_bytes(pki.crl.read_bytes() + b"\n")
    after = context.build_context(policy(pki, keys, ssl_crl=str(crl)))
    assert not resumes(before, after)


def test_session_id_from_the_shared_zone_never_resumes_under_another_crl(pki: Pki) -> None:
    shared = cache(shared_name="POLICY", shared_size=1 << 20)
    one = context.build_context(policy(pki, (), ssl_session_cache=shared))
    another = context.build_context(policy(pki, (), ssl_session_cache=shared, ssl_crl=str(pki.crl)))
    assert resumes(
        one, context.build_context(policy(pki, (), ssl_session_cache=shared)), **TLS12_NO_TICKET
    )
    assert not resumes(one, another, **TLS12_NO_TICKET)


def test_ticket_never_resumes_on_a_server_whose_conf_command_sets_another_ca(
    pki: Pki, tmp_path: Path
) -> None:
    keys = (key_file(tmp_path),)
    command = model.ConfCommand(
        "VerifyCAFile", str(pki.other_ca), str(tmp_path), model.Source("test.conf", 1)
    )
    one = context.build_context(policy(pki, keys))
    another = context.build_context(policy(pki, keys, ssl_conf_command=(command,)))
    assert not resumes(one, another)


def test_policy_of_a_server_without_verification_reads_no_file(tmp_path: Path) -> None:
    """As nginx, ``ssl_verify_client off`` leaves the CA and CRL files unread."""
    missing = str(tmp_path / "missing.pem")
    server = server_config(ssl_client_certificate=missing, ssl_crl=missing)
    assert verify_setup.policy_digest(server) == verify_setup.policy_digest(server_config())


def test_policy_file_that_cannot_be_read_is_a_config_error(pki: Pki, tmp_path: Path) -> None:
    gone = tmp_path / "gone.pem"
    with pytest.raises(context.TLSConfigError, match=f'^open\\(\\) "{gone}" failed \\(2: '):
        verify_setup.policy_digest(policy(pki, (), ssl_crl=str(gone)))


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
