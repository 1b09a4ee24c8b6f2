"""Certificates and keys are loaded when the context is built, so ``mailgate -t`` catches them."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker.tls import context


def server(**settings: object) -> model.ServerConfig:
    listen = model.Listen(socket.AF_INET, "127.0.0.1", 993, model.Source("t.conf", 3), ssl=True)
    return model.ServerConfig(
        source=model.Source("t.conf", 2),
        listens=(listen,),
        protocol=model.Protocol.IMAP,
        **settings,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pair(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    leaf = ca.issue_cert("localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def handshake(ctx: SSL.Context) -> str:
    """Complete a handshake over memory BIOs; return the negotiated version."""
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD))
    client.set_connect_state()
    srv = SSL.Connection(ctx)
    srv.set_accept_state()
    for _ in range(10):
        for conn in (client, srv):
            with contextlib.suppress(SSL.WantReadError):
                conn.do_handshake()
        for src, dst in ((client, srv), (srv, client)):
            with contextlib.suppress(SSL.WantReadError):
                dst.bio_write(src.bio_read(65536))
    return str(srv.get_protocol_version_name())


def test_context_with_certificate_and_key_completes_a_handshake(pair: tuple[str, str]) -> None:
    cert, key = pair
    ctx = context.build_context(server(ssl_certificate=(cert,), ssl_certificate_key=(key,)))
    assert handshake(ctx) == "TLSv1.3"


def test_ssl_protocols_without_tlsv13_negotiates_tlsv12(pair: tuple[str, str]) -> None:
    cert, key = pair
    ctx = context.build_context(
        server(ssl_certificate=(cert,), ssl_certificate_key=(key,), ssl_protocols=("TLSv1.2",))
    )
    assert handshake(ctx) == "TLSv1.2"


def test_data_values_are_loaded_from_memory(pair: tuple[str, str]) -> None:
    cert, key = (Path(p).read_text() for p in pair)
    ctx = context.build_context(
        server(ssl_certificate=("data:" + cert,), ssl_certificate_key=("data:" + key,))
    )
    assert handshake(ctx) == "TLSv1.3"


def test_missing_certificate_file_names_the_file(pair: tuple[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(context.TLSConfigError) as err:
        context.build_context(server(ssl_certificate=(missing,), ssl_certificate_key=(pair[1],)))
    assert str(err.value) == (
        f'cannot load certificate "{missing}": BIO_new_file() failed (2: No such file or directory)'
    )


def test_file_without_a_certificate_is_refused(pair: tuple[str, str]) -> None:
    key = pair[1]
    with pytest.raises(context.TLSConfigError, match=rf'^cannot load certificate "{key}"'):
        context.build_context(server(ssl_certificate=(key,), ssl_certificate_key=(key,)))


def test_key_of_another_certificate_is_a_mismatch(
    ca: trustme.CA, pair: tuple[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other-key.pem"
    ca.issue_cert("other").private_key_pem.write_to_path(str(other))
    with pytest.raises(context.TLSConfigError) as err:
        context.build_context(server(ssl_certificate=(pair[0],), ssl_certificate_key=(str(other),)))
    assert str(err.value) == (
        f'SSL_CTX_use_PrivateKey("{other}") failed (SSL: key values mismatch)'
    )


def encrypted_key(key_path: str, tmp_path: Path, password: bytes) -> str:
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    path = tmp_path / "encrypted-key.pem"
    path.write_bytes(pem)
    return str(path)


def test_password_file_lines_are_tried_in_turn(pair: tuple[str, str], tmp_path: Path) -> None:
    key = encrypted_key(pair[1], tmp_path, b"second")
    passwords = tmp_path / "passwords"
    passwords.write_text("first\nsecond\n")
    ctx = context.build_context(
        server(
            ssl_certificate=(pair[0],),
            ssl_certificate_key=(key,),
            ssl_password_file=str(passwords),
        )
    )
    assert handshake(ctx) == "TLSv1.3"


def test_encrypted_key_without_the_right_password_names_the_key(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    key = encrypted_key(pair[1], tmp_path, b"secret")
    passwords = tmp_path / "passwords"
    passwords.write_text("wrong\n")
    with pytest.raises(context.TLSConfigError, match=rf'^cannot load certificate key "{key}"'):
        context.build_context(
            server(
                ssl_certificate=(pair[0],),
                ssl_certificate_key=(key,),
                ssl_password_file=str(passwords),
            )
        )


def test_engine_keys_are_refused_clearly(pair: tuple[str, str]) -> None:
    with pytest.raises(context.TLSConfigError, match="engine and store keys are not supported"):
        context.build_context(
            server(ssl_certificate=(pair[0],), ssl_certificate_key=("engine:pkcs11:id",))
        )


def _plain_and_secure(pair: tuple[str, str]) -> model.Config:
    plain = model.ServerConfig(
        source=model.Source("t.conf", 9),
        listens=(model.Listen(socket.AF_INET, "127.0.0.1", 143, model.Source("t.conf", 10)),),
        protocol=model.Protocol.IMAP,
    )
    secure = server(ssl_certificate=(pair[0],), ssl_certificate_key=(pair[1],))
    return model.Config("t.conf", "/", model.MainConfig(), (plain, secure))


def test_only_servers_that_need_tls_get_a_context(pair: tuple[str, str]) -> None:
    assert list(context.build_contexts(_plain_and_secure(pair))) == [1]


def test_contexts_are_found_by_the_servers_own_objects(pair: tuple[str, str]) -> None:
    config = _plain_and_secure(pair)
    plain, secure = config.servers
    contexts = context.build_contexts(config)
    assert contexts.for_server(secure) is contexts[1]
    assert contexts.for_server(plain) is None
    assert len(contexts) == 1
