"""ssl_conf_command, ssl_ecdh_curve, ssl_dhparam and ssl_certificate_compression."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trustme
from OpenSSL import SSL, crypto

from mailgate.config import model
from mailgate.worker.tls import context
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
LINE = 7


def conf_command(name: str, value: str, conf_prefix: Path | str = "/") -> model.ConfCommand:
    """``ssl_conf_command NAME VALUE;`` written on line 7 of t.conf, whose folder is given."""
    return model.ConfCommand(name, value, str(conf_prefix), model.Source("t.conf", LINE))


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The configuration's folder; the working directory is an empty one beside it."""
    conf = tmp_path / "conf"
    (tmp_path / "cwd").mkdir()
    conf.mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return conf


def test_conf_command_ciphersuites_changes_the_negotiated_tls13_suite(pki: Pki) -> None:
    ctx = context.build_context(
        server_config(
            **pki.pair(),
            ssl_conf_command=(conf_command("Ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"),),
        )
    )
    _, srv = handshake(ctx)
    assert srv.get_cipher_name() == "TLS_CHACHA20_POLY1305_SHA256"


def test_unknown_conf_command_fails_with_nginx_message(pki: Pki) -> None:
    server = server_config(**pki.pair(), ssl_conf_command=(conf_command("NoSuchCommand", "x"),))
    with pytest.raises(context.TLSConfigError) as err:
        context.build_context(server)
    assert str(err.value).startswith('SSL_CONF_cmd("NoSuchCommand", "x") failed (SSL: error:')


def test_conf_command_overrides_ssl_ciphers(pki: Pki) -> None:
    server = server_config(
        **pki.pair(),
        ssl_protocols=("TLSv1.2",),
        ssl_conf_command=(conf_command("CipherString", "ECDHE-RSA-AES128-GCM-SHA256"),),
    )
    _, srv = handshake(context.build_context(server))
    assert srv.get_cipher_name() == "ECDHE-RSA-AES128-GCM-SHA256"


def test_conf_command_certificate_is_read_from_the_configuration_folder(
    pki: Pki, elsewhere: Path
) -> None:
    override = trustme.CA().issue_cert("override.example", key_type=trustme.KeyType.RSA)
    override.cert_chain_pems[0].write_to_path(str(elsewhere / "override.crt"))
    override.private_key_pem.write_to_path(str(elsewhere / "override.key"))
    server = server_config(
        **pki.pair(),
        ssl_conf_command=(
            conf_command("Certificate", "override.crt", elsewhere),
            conf_command("PrivateKey", "override.key", elsewhere),
        ),
    )
    client, _ = handshake(context.build_context(server))
    served = client.get_peer_certificate()
    assert served is not None
    assert (
        crypto.dump_certificate(crypto.FILETYPE_PEM, served) == override.cert_chain_pems[0].bytes()
    )


def test_missing_conf_command_file_is_refused_by_full_name_and_line(
    pki: Pki, elsewhere: Path
) -> None:
    server = server_config(
        **pki.pair(), ssl_conf_command=(conf_command("Certificate", "missing.crt", elsewhere),)
    )
    with pytest.raises(context.TLSConfigError) as err:
        context.build_context(server)
    assert str(err.value) == (
        f'stat() "{elsewhere / "missing.crt"}" failed (2: No such file or directory) '
        f"in t.conf:{LINE}"
    )


def test_conf_command_folder_that_is_a_file_is_refused(pki: Pki, elsewhere: Path) -> None:
    (elsewhere / "certs").write_text("")
    server = server_config(
        **pki.pair(), ssl_conf_command=(conf_command("VerifyCAPath", "certs", elsewhere),)
    )
    with pytest.raises(context.TLSConfigError) as err:
        context.build_context(server)
    assert str(err.value) == f'"{elsewhere / "certs"}" is not a directory in t.conf:{LINE}'


def test_each_folder_of_a_conf_command_folder_list_is_resolved(pki: Pki, elsewhere: Path) -> None:
    # OpenSSL reads "a:b" as two folders; the second is missing, so it is the one named.
    (elsewhere / "a").mkdir()
    server = server_config(
        **pki.pair(), ssl_conf_command=(conf_command("VerifyCAPath", "a:b", elsewhere),)
    )
    with pytest.raises(context.TLSConfigError) as err:
        context.build_context(server)
    assert str(err.value).startswith(f'stat() "{elsewhere / "b"}" failed')


def test_conf_command_store_given_as_a_path_is_read_from_the_configuration_folder(
    pki: Pki, elsewhere: Path
) -> None:
    (elsewhere / "ca.pem").write_bytes(pki.ca.read_bytes())
    server = server_config(
        **pki.pair(), ssl_conf_command=(conf_command("VerifyCAStore", "ca.pem", elsewhere),)
    )
    # From the working directory OpenSSL would find no "ca.pem" and fail.
    context.build_context(server)


def test_conf_command_store_uri_is_passed_as_written(pki: Pki, elsewhere: Path) -> None:
    server = server_config(
        **pki.pair(), ssl_conf_command=(conf_command("VerifyCAStore", "file:nope.pem", elsewhere),)
    )
    with pytest.raises(
        context.TLSConfigError, match=r'^SSL_CONF_cmd\("VerifyCAStore", "file:nope\.pem"\)'
    ):
        context.build_context(server)


def test_command_line_style_conf_command_is_unknown(pki: Pki, elsewhere: Path) -> None:
    # "-cert" is the SSL_CONF_FLAG_CMDLINE spelling; nginx and mailgate use the file one.
    (elsewhere / "c.pem").write_bytes(pki.rsa_cert.read_bytes())
    server = server_config(
        **pki.pair(), ssl_conf_command=(conf_command("-cert", "c.pem", elsewhere),)
    )
    with pytest.raises(context.TLSConfigError, match=r'^SSL_CONF_cmd\("-cert", "c\.pem"\) failed'):
        context.build_context(server)


def test_curve_list_limits_the_groups(pki: Pki, connect: Connect) -> None:
    output, seen = connect(server_config(**pki.pair(), ssl_ecdh_curve="secp384r1"))
    assert seen.protocol == "TLSv1.3"
    assert "Server Temp Key: ECDH, secp384r1, 384 bits" in output


def test_unknown_curve_fails_with_nginx_message(pki: Pki) -> None:
    with pytest.raises(context.TLSConfigError, match=r'^SSL_CTX_set1_curves_list\("nope"\) failed'):
        context.build_context(server_config(**pki.pair(), ssl_ecdh_curve="nope"))


def test_dhparam_enables_a_dhe_cipher_under_tls12(pki: Pki, dhparam: str) -> None:
    ctx = context.build_context(server_config(**pki.pair(), ssl_dhparam=dhparam))
    _, srv = handshake(ctx, client_context(**TLS12_DHE))
    assert srv.get_cipher_name() == "DHE-RSA-AES128-GCM-SHA256"


def test_without_dhparam_there_is_no_dhe(pki: Pki) -> None:
    ctx = context.build_context(server_config(**pki.pair()))
    with pytest.raises(SSL.Error):
        handshake(ctx, client_context(**TLS12_DHE))


def test_dhparam_file_without_parameters_names_the_file(pki: Pki, tmp_path: Path) -> None:
    bogus = tmp_path / "dh.pem"
    bogus.write_text("not pem\n")
    with pytest.raises(
        context.TLSConfigError, match=rf'^PEM_read_bio_Parameters\("{bogus}"\) failed'
    ):
        context.build_context(server_config(**pki.pair(), ssl_dhparam=str(bogus)))


def test_certificate_compression_on_is_refused_on_openssl_30(pki: Pki) -> None:
    with pytest.raises(context.TLSConfigError, match=r"ssl_certificate_compression on.*3\.2"):
        context.build_context(server_config(**pki.pair(), ssl_certificate_compression=True))
