"""native.py's reach into pyOpenSSL privates still matches the installed pyOpenSSL.

mailgate runs on Debian 12's pyOpenSSL 23.0.0. A different pyOpenSSL may rename or drop any
private name used in worker/tls/native.py; these tests fail then, before a connection does.
"""

from __future__ import annotations

import inspect
import re
import socket
from pathlib import Path

import pytest
from OpenSSL import SSL, crypto

from mailgate.worker.io import stream
from mailgate.worker.tls import context, native
from tests.unit.tls.conftest import Pki, handshake, server_config

STREAM_SOURCE = Path(inspect.getfile(stream)).read_text()


def test_connection_sets_exactly_the_attributes_of_pyopenssls_constructor() -> None:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    with socket.socket() as sock:
        real = SSL.Connection(ctx, sock)
        assert set(real.__dict__) == native.CONNECTION_ATTRIBUTES
        built = native.connection(native.connection_cdata(real), ctx, sock)
    assert set(built.__dict__) == native.CONNECTION_ATTRIBUTES
    assert type(built) is SSL.Connection


def test_connection_reads_the_handshake_of_an_ssl_made_elsewhere(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair()))
    _, srv = handshake(ctx)
    with socket.socket() as sock:
        built = native.connection(native.connection_cdata(srv), ctx, sock)
    assert built.get_cipher_name() == srv.get_cipher_name()
    assert built.get_protocol_version_name() == srv.get_protocol_version_name()


def test_raise_ssl_error_raises_pyopenssls_exception(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair()))
    _, srv = handshake(ctx)
    ffi, lib = native.pyopenssl_binding()
    ssl = native.connection_cdata(srv)
    result = lib.SSL_read(ssl, ffi.new("char[]", 1), 1)  # nothing sent: wants to read
    with pytest.raises(SSL.WantReadError):
        native.raise_ssl_error(srv, ssl, result)


def test_private_attributes_used_by_native_exist(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair()))
    assert native.context_cdata(ctx) is ctx._context
    for name in (
        "_verify_helper",
        "_verify_callback",
        "_cookie_generate_helper",
        "_cookie_verify_helper",
    ):
        assert name in ctx.__dict__  # connection() copies them from the context
    parameters = list(inspect.signature(SSL.Connection._raise_ssl_error).parameters)
    assert parameters == ["self", "ssl", "result"]
    client, srv = handshake(ctx)
    session = client.get_session()
    assert session is not None
    assert native.session_ptr(session) is not None  # reads Session._session
    assert native.ssl_ptr(srv) is not None  # reads Connection._ssl
    peer = srv.get_certificate()
    assert isinstance(peer, crypto.X509)
    assert native.x509_ptr(peer) is not None  # reads X509._x509


def test_pyopenssl_binding_has_every_name_the_stream_calls() -> None:
    ffi, lib = native.pyopenssl_binding()
    used = set(re.findall(r"\b_lib\.(\w+)", STREAM_SOURCE)) | {"SSL_CTX_set_read_ahead"}
    assert {"SSL_new", "SSL_read", "SSL_write", "SSL_get_error"} <= used
    assert sorted(name for name in used if not hasattr(lib, name)) == []
    assert {"string", "buffer", "from_buffer", "gc", "new"} <= set(dir(ffi))
