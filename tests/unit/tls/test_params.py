"""ssl_conf_command, ssl_ecdh_curve, ssl_dhparam and ssl_certificate_compression."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from OpenSSL import SSL

from mailgate.worker import tls
from tests.unit.tls.conftest import Connect, Pki, client_context, handshake, server_config


@pytest.fixture(scope="module")
def dhparam(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("dh") / "dh.pem"
    # RFC 7919's ffdhe2048: instant, and large enough for OpenSSL 3's default security level.
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-genparam",
            "-algorithm",
            "DH",
            "-pkeyopt",
            "group:ffdhe2048",
            "-out",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return str(path)


TLS12_DHE = {"max_version": SSL.TLS1_2_VERSION, "ciphers": b"DHE-RSA-AES128-GCM-SHA256"}


def test_conf_command_ciphersuites_changes_the_negotiated_tls13_suite(pki: Pki) -> None:
    ctx = tls.build_context(
        server_config(
            **pki.pair(), ssl_conf_command=(("Ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"),)
        )
    )
    _, srv = handshake(ctx)
    assert srv.get_cipher_name() == "TLS_CHACHA20_POLY1305_SHA256"


def test_unknown_conf_command_fails_with_nginx_message(pki: Pki) -> None:
    server = server_config(**pki.pair(), ssl_conf_command=(("NoSuchCommand", "x"),))
    with pytest.raises(tls.TLSConfigError) as err:
        tls.build_context(server)
    assert str(err.value).startswith('SSL_CONF_cmd("NoSuchCommand", "x") failed (SSL: error:')


def test_conf_command_overrides_ssl_ciphers(pki: Pki) -> None:
    server = server_config(
        **pki.pair(),
        ssl_protocols=("TLSv1.2",),
        ssl_conf_command=(("CipherString", "ECDHE-RSA-AES128-GCM-SHA256"),),
    )
    _, srv = handshake(tls.build_context(server))
    assert srv.get_cipher_name() == "ECDHE-RSA-AES128-GCM-SHA256"


def test_curve_list_limits_the_groups(pki: Pki, connect: Connect) -> None:
    output, seen = connect(server_config(**pki.pair(), ssl_ecdh_curve="secp384r1"))
    assert seen.protocol == "TLSv1.3"
    assert "Server Temp Key: ECDH, secp384r1, 384 bits" in output


def test_unknown_curve_fails_with_nginx_message(pki: Pki) -> None:
    with pytest.raises(tls.TLSConfigError, match=r'^SSL_CTX_set1_curves_list\("nope"\) failed'):
        tls.build_context(server_config(**pki.pair(), ssl_ecdh_curve="nope"))


def test_dhparam_enables_a_dhe_cipher_under_tls12(pki: Pki, dhparam: str) -> None:
    ctx = tls.build_context(server_config(**pki.pair(), ssl_dhparam=dhparam))
    _, srv = handshake(ctx, client_context(**TLS12_DHE))
    assert srv.get_cipher_name() == "DHE-RSA-AES128-GCM-SHA256"


def test_without_dhparam_there_is_no_dhe(pki: Pki) -> None:
    ctx = tls.build_context(server_config(**pki.pair()))
    with pytest.raises(SSL.Error):
        handshake(ctx, client_context(**TLS12_DHE))


def test_dhparam_file_without_parameters_names_the_file(pki: Pki, tmp_path: Path) -> None:
    bogus = tmp_path / "dh.pem"
    bogus.write_text("not pem\n")
    with pytest.raises(tls.TLSConfigError, match=rf'^PEM_read_bio_Parameters\("{bogus}"\) failed'):
        tls.build_context(server_config(**pki.pair(), ssl_dhparam=str(bogus)))


def test_certificate_compression_on_is_refused_on_openssl_30(pki: Pki) -> None:
    with pytest.raises(tls.TLSConfigError, match=r"ssl_certificate_compression on.*3\.2"):
        tls.build_context(server_config(**pki.pair(), ssl_certificate_compression=True))
