"""ssl_session_ticket_key files: layouts, errors, and which key seals, opens and renews."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from OpenSSL import SSL

from mailgate.worker.tls import context, native, ticket_key_files
from tests.unit.tls.conftest import (
    Connect,
    Pki,
    client_context,
    handshake,
    server_config,
    session_reused,
)

TLS12 = {"max_version": SSL.TLS1_2_VERSION}


def test_48_byte_file_is_name_aes_hmac() -> None:
    key = ticket_key_files.parse_key(bytes(range(48)), "k")
    assert (key.name, key.aes_key, key.hmac_key) == (
        bytes(range(16)),
        bytes(range(16, 32)),
        bytes(range(32, 48)),
    )


def test_80_byte_file_is_name_hmac_aes() -> None:
    key = ticket_key_files.parse_key(bytes(range(80)), "k")
    assert (key.name, key.hmac_key, key.aes_key) == (
        bytes(range(16)),
        bytes(range(16, 48)),
        bytes(range(48, 80)),
    )


def test_other_sizes_are_refused_with_nginx_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(b"x" * 64)
    with pytest.raises(context.TLSConfigError, match=rf'^"{path}" must be 48 or 80 bytes$'):
        ticket_key_files.load_keys([str(path)])


def test_missing_key_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "none.key"
    with pytest.raises(context.TLSConfigError, match=rf'^open\(\) "{path}" failed \(2: '):
        ticket_key_files.load_keys([str(path)])


def write_key(tmp_path: Path, name: str, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    path = tmp_path / f"{name}.key"
    path.write_bytes(data)
    return str(path), data[:16]


def ticket_name(session: SSL.Session) -> bytes:
    """The key name that starts the ticket (OpenSSL's ticket layout: name | IV | ...)."""
    ffi, ssl_lib, _ = native.libraries()
    data, size = ffi.new("const unsigned char **"), ffi.new("size_t *")
    ssl_lib.SSL_SESSION_get0_ticket(native.session_ptr(session), data, size)
    return bytes(ffi.buffer(data[0], size[0]))[:16]


def keyed_context(pki: Pki, *keys: str) -> SSL.Context:
    return context.build_context(server_config(**pki.pair(), ssl_session_ticket_key=keys))


@pytest.fixture(params=[48, 80])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, tuple[str, bytes]]:
    return {name: write_key(tmp_path, name, request.param) for name in ("a", "b")}


def test_first_key_seals_new_tickets(pki: Pki, keys: dict[str, tuple[str, bytes]]) -> None:
    client, _ = handshake(keyed_context(pki, keys["a"][0], keys["b"][0]), client_context(**TLS12))
    assert ticket_name(client.get_session()) == keys["a"][1]


def test_ticket_from_a_later_key_resumes_and_is_renewed_with_the_first(
    pki: Pki, keys: dict[str, tuple[str, bytes]]
) -> None:
    old, _ = handshake(keyed_context(pki, keys["b"][0]), client_context(**TLS12))
    client, srv = handshake(
        keyed_context(pki, keys["a"][0], keys["b"][0]), client_context(**TLS12), old.get_session()
    )
    assert session_reused(srv)
    assert ticket_name(client.get_session()) == keys["a"][1]


def test_ticket_from_the_first_key_is_not_renewed_under_tls12(
    pki: Pki, keys: dict[str, tuple[str, bytes]]
) -> None:
    ctx = keyed_context(pki, keys["a"][0], keys["b"][0])
    old, _ = handshake(ctx, client_context(**TLS12))
    client, srv = handshake(ctx, client_context(**TLS12), old.get_session())
    assert session_reused(srv)
    assert ticket_name(client.get_session()) == ticket_name(old.get_session())


def test_ticket_from_an_unknown_key_gets_a_full_handshake(
    pki: Pki, keys: dict[str, tuple[str, bytes]]
) -> None:
    old, _ = handshake(keyed_context(pki, keys["b"][0]), client_context(**TLS12))
    _, srv = handshake(keyed_context(pki, keys["a"][0]), client_context(**TLS12), old.get_session())
    assert not session_reused(srv)


def test_s_client_ticket_from_key_b_resumes_when_b_is_second(
    pki: Pki, connect: Connect, tmp_path: Path
) -> None:
    (a, _), (b, _) = write_key(tmp_path, "a", 80), write_key(tmp_path, "b", 48)
    session = str(tmp_path / "session.pem")
    connect(server_config(**pki.pair(), ssl_session_ticket_key=(b,)), "-sess_out", session)
    rotated = server_config(**pki.pair(), ssl_session_ticket_key=(a, b))
    output, seen = connect(rotated, "-sess_in", session)
    assert "Reused, TLSv1.3" in output and seen.reused
