"""ALPN: only the protocol's own name; a client that offers ALPN without it gets a fatal alert."""

from __future__ import annotations

import pytest
from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker.tls import context
from tests.unit.tls.conftest import Connect, Pki, client_context, handshake, server_config


def test_alpn_selects_the_protocol_name(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair(), protocol=model.Protocol.POP3))
    client, _ = handshake(ctx, client_context(alpn=[b"imap", b"pop3"]))
    assert client.get_alpn_proto_negotiated() == b"pop3"


def test_client_without_alpn_completes_the_handshake(pki: Pki, connect: Connect) -> None:
    output, seen = connect(server_config(**pki.pair()))
    assert not seen.error
    assert "No ALPN negotiated" in output


def test_s_client_alpn_imap_is_accepted(pki: Pki, connect: Connect) -> None:
    output, seen = connect(server_config(**pki.pair()), "-alpn", "imap")
    assert not seen.error
    assert "ALPN protocol: imap" in output


def test_alpn_mismatch_is_a_fatal_no_application_protocol_alert(pki: Pki, connect: Connect) -> None:
    output, seen = connect(server_config(**pki.pair()), "-alpn", "smtp,pop3")
    assert "no application protocol" in seen.error
    assert "alert no application protocol" in output


def test_alpn_mismatch_fails_a_pyopenssl_client(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair(), protocol=model.Protocol.SMTP))
    with pytest.raises(SSL.Error, match="no application protocol"):
        handshake(ctx, client_context(alpn=[b"http/1.1"]))
