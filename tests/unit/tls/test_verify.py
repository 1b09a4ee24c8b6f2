"""ssl_verify_client with real client certificates from ``openssl s_client``.

The handshake always completes (nginx's accept-all verify callback); ``verify_result`` then
says what nginx would put in Auth-SSL-Verify and which reply, if any, the session must send.
"""

from __future__ import annotations

from typing import Any

import pytest

from mailgate.config import model
from mailgate.worker.tls import client_cert, context
from tests.unit.tls.conftest import Connect, Pki, handshake, server_config

Reply = client_cert.VerifyReply


def verifying(pki: Pki, mode: model.VerifyClient, **settings: Any) -> model.ServerConfig:
    settings.setdefault("ssl_client_certificate", str(pki.ca))
    return server_config(**pki.pair(), ssl_verify_client=mode, **settings)


def test_valid_client_certificate_succeeds(pki: Pki, connect: Connect) -> None:
    _, seen = connect(verifying(pki, model.VerifyClient.ON), "-cert", str(pki.client_cert))
    assert seen.outcome == client_cert.VerifyOutcome("SUCCESS", 0, Reply.NONE)


def test_missing_certificate_with_verify_on_needs_the_no_cert_reply(
    pki: Pki, connect: Connect
) -> None:
    _, seen = connect(verifying(pki, model.VerifyClient.ON))
    assert seen.outcome is not None
    assert (seen.outcome.verify, seen.outcome.reply) == ("NONE", Reply.NO_CERT)
    assert seen.outcome.log == "client sent no required SSL certificate"


def test_missing_certificate_with_verify_optional_is_fine(pki: Pki, connect: Connect) -> None:
    _, seen = connect(verifying(pki, model.VerifyClient.OPTIONAL))
    assert seen.outcome == client_cert.VerifyOutcome("NONE", 0, Reply.NONE)


def test_certificate_from_another_ca_needs_the_cert_error_reply(pki: Pki, connect: Connect) -> None:
    _, seen = connect(verifying(pki, model.VerifyClient.OPTIONAL), "-cert", str(pki.stranger_cert))
    assert seen.outcome is not None
    assert seen.outcome.verify == "FAILED:unable to verify the first certificate"
    assert seen.outcome.reply is Reply.CERT_ERROR
    assert seen.outcome.log == (
        "client SSL certificate verify error: (21:unable to verify the first certificate)"
    )


def test_optional_no_ca_forgives_an_unknown_issuer(pki: Pki, connect: Connect) -> None:
    server = verifying(pki, model.VerifyClient.OPTIONAL_NO_CA, ssl_client_certificate=None)
    _, seen = connect(server, "-cert", str(pki.stranger_cert))
    assert seen.outcome is not None
    assert seen.outcome.verify.startswith("FAILED:")
    assert seen.outcome.reply is Reply.NONE


def test_revoked_certificate_fails_with_a_crl(pki: Pki, connect: Connect) -> None:
    server = verifying(pki, model.VerifyClient.ON, ssl_crl=str(pki.crl))
    _, seen = connect(server, "-cert", str(pki.revoked_cert))
    assert seen.outcome is not None
    assert (seen.outcome.verify, seen.outcome.reply) == (
        "FAILED:certificate revoked",
        Reply.CERT_ERROR,
    )


def test_unrevoked_certificate_passes_the_crl_check(pki: Pki, connect: Connect) -> None:
    server = verifying(pki, model.VerifyClient.ON, ssl_crl=str(pki.crl))
    _, seen = connect(server, "-cert", str(pki.client_cert))
    assert seen.outcome is not None and seen.outcome.verify == "SUCCESS"


def test_optional_no_ca_does_not_forgive_revocation(pki: Pki, connect: Connect) -> None:
    server = verifying(pki, model.VerifyClient.OPTIONAL_NO_CA, ssl_crl=str(pki.crl))
    _, seen = connect(server, "-cert", str(pki.revoked_cert))
    assert seen.outcome is not None and seen.outcome.reply is Reply.CERT_ERROR


# OpenSSL's depth counts the levels above the leaf that may be untrusted intermediates and
# still reach the anchor: depth 1 (nginx's default) admits one intermediate, depth 0 none.
# (OpenSSL 3 stops building the chain at the limit and so reports error 20, not 22.)
@pytest.mark.parametrize(
    ("depth", "verify"), [(0, "FAILED:unable to get local issuer certificate"), (1, "SUCCESS")]
)
def test_verify_depth_limits_the_chain(pki: Pki, connect: Connect, depth: int, verify: str) -> None:
    server = verifying(pki, model.VerifyClient.ON, ssl_verify_depth=depth)
    _, seen = connect(server, "-cert", str(pki.deep_cert), "-cert_chain", str(pki.deep_chain))
    assert seen.outcome is not None and seen.outcome.verify == verify


def test_client_certificate_names_are_sent(pki: Pki, connect: Connect) -> None:
    output, _ = connect(verifying(pki, model.VerifyClient.OPTIONAL))
    assert "Acceptable client certificate CA names" in output


def test_trusted_certificate_names_are_not_sent(pki: Pki, connect: Connect) -> None:
    server = verifying(
        pki, model.VerifyClient.ON, ssl_client_certificate=None, ssl_trusted_certificate=str(pki.ca)
    )
    output, seen = connect(server, "-cert", str(pki.client_cert))
    assert "No client certificate CA names sent" in output
    assert seen.outcome is not None and seen.outcome.verify == "SUCCESS"


def test_verify_off_reports_nothing(pki: Pki) -> None:
    server = server_config(**pki.pair())
    _, srv = handshake(context.build_context(server))
    assert client_cert.verify_result(srv, server) == client_cert.VerifyOutcome("", 0, Reply.NONE)


def test_client_cert_info_is_formatted_as_nginx(pki: Pki, connect: Connect) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    _, seen = connect(verifying(pki, model.VerifyClient.ON), "-cert", str(pki.client_cert))
    cert = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    assert seen.info is not None
    # These names are plain ASCII, where OpenSSL's RFC 2253 printing equals RFC 4514's.
    assert seen.info.subject == cert.subject.rfc4514_string()
    assert seen.info.subject.startswith("CN=client,OU=Testing cert #")
    assert seen.info.issuer == cert.issuer.rfc4514_string()
    assert seen.info.serial == f"{cert.serial_number:X}".zfill(len(seen.info.serial))
    assert seen.info.serial == seen.info.serial.upper()
    assert seen.info.fingerprint == cert.fingerprint(hashes.SHA1()).hex()
    assert seen.info.pem.startswith(b"-----BEGIN CERTIFICATE-----\n")


def test_serial_hex_matches_i2a_asn1_integer() -> None:
    assert client_cert._serial_hex(0) == "00"
    assert client_cert._serial_hex(0xABC) == "0ABC"
    assert client_cert._serial_hex(-0x10) == "-10"
