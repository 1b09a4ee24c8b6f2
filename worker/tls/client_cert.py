"""Client certificates after the handshake: the verdict and the certificate's fields.

The context asks for a certificate but accepts any (:mod:`mailgate.worker.tls.verify_setup`),
so the handshake always completes; the session then reads the verify result and decides
whether to send the protocol's "cert error" or "no cert" reply (:func:`verify_result`). That
way the client learns why in its own protocol, not from an alert.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker.auth_http.request import ClientTls
from mailgate.worker.tls import native

X509_V_OK = 0
# XN_FLAG_RFC2253: ESC_2253|ESC_CTRL|ESC_MSB|UTF8_CONVERT|DUMP_UNKNOWN|DUMP_DER, SEP_COMMA_PLUS,
# DN_REV, FN_SN, DUMP_UNKNOWN_FIELDS -- what nginx passes to X509_NAME_print_ex.
XN_FLAG_RFC2253 = 0x1110317
BIO_CTRL_PENDING = 10

# ngx_ssl_verify_error_optional(): what optional_no_ca forgives -- a chain that ends in a CA
# mailgate does not know, but not a bad signature, an expired or a revoked certificate.
OPTIONAL_NO_CA_ERRORS = frozenset(
    {
        18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
        27,  # X509_V_ERR_CERT_UNTRUSTED
    }
)


class VerifyReply(enum.Enum):
    """What the session must do about the client certificate before anything else."""

    NONE = "none"  # carry on
    CERT_ERROR = "cert_error"  # send the protocol's "cert error" reply and close
    NO_CERT = "no_cert"  # send the protocol's "no cert" reply and close


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """The verification result, in the words of nginx's header, reply and log line."""

    verify: str  # Auth-SSL-Verify: "SUCCESS", "FAILED:<reason>", "NONE"; "" when verify is off
    code: int  # SSL_get_verify_result()
    reply: VerifyReply
    log: str = ""  # the info line to log when reply is not NONE

    @property
    def rejected(self) -> bool:
        return self.reply is not VerifyReply.NONE


def _verify_text(code: int, has_cert: bool) -> str:
    """ngx_ssl_get_client_verify(): NONE without a certificate, else SUCCESS or the reason."""
    if not has_cert:
        return "NONE"
    if code == X509_V_OK:
        return "SUCCESS"
    return "FAILED:" + _error_string(code)


def _error_string(code: int) -> str:
    ffi, _, crypto = native.libraries()
    return str(ffi.string(crypto.X509_verify_cert_error_string(code)).decode())


def verify_result(conn: SSL.Connection, server: model.ServerConfig) -> VerifyOutcome:
    """Decide, after the handshake, as ``ngx_mail_verify_cert`` does."""
    mode = server.ssl_verify_client
    if mode is model.VerifyClient.OFF:
        return VerifyOutcome("", X509_V_OK, VerifyReply.NONE)
    _, ssl_lib, _ = native.libraries()
    code = int(ssl_lib.SSL_get_verify_result(native.ssl_ptr(conn)))
    has_cert = conn.get_peer_certificate() is not None
    text = _verify_text(code, has_cert)
    forgiven = mode is model.VerifyClient.OPTIONAL_NO_CA and code in OPTIONAL_NO_CA_ERRORS
    if code != X509_V_OK and not forgiven:
        log = f"client SSL certificate verify error: ({code}:{_error_string(code)})"
        return VerifyOutcome(text, code, VerifyReply.CERT_ERROR, log)
    if mode is model.VerifyClient.ON and not has_cert:
        return VerifyOutcome(
            text, code, VerifyReply.NO_CERT, "client sent no required SSL certificate"
        )
    return VerifyOutcome(text, code, VerifyReply.NONE)


def remove_session(conn: SSL.Connection) -> None:
    """Drop the connection's session from the cache, so a rejected client cannot resume it."""
    ffi, ssl_lib, _ = native.libraries()
    ssl = native.ssl_ptr(conn)
    session = ssl_lib.SSL_get_session(ssl)
    if session != ffi.NULL:
        ssl_lib.SSL_CTX_remove_session(ssl_lib.SSL_get_SSL_CTX(ssl), session)


class CertInfo(NamedTuple):
    """The client certificate fields of the Auth-SSL-* headers, formatted as nginx does."""

    subject: str  # RFC 2253
    issuer: str  # RFC 2253
    serial: str  # hex, uppercase
    fingerprint: str  # SHA-1, hex, lowercase
    pem: bytes


def _rfc2253(name: Any) -> str:
    ffi, _, crypto = native.libraries()
    bio = crypto.BIO_new(crypto.BIO_s_mem())
    try:
        if crypto.X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0:
            return ""
        size = crypto.BIO_ctrl(bio, BIO_CTRL_PENDING, 0, ffi.NULL)
        buf = ffi.new("char[]", max(size, 1))
        read = crypto.BIO_read(bio, buf, size)
        return bytes(ffi.buffer(buf, max(read, 0))).decode("utf-8", errors="replace")
    finally:
        crypto.BIO_free(bio)


def _serial_hex(serial: int) -> str:
    """i2a_ASN1_INTEGER(): two uppercase digits per byte, "00" for zero, "-" if negative.

    (OpenSSL also breaks lines after 35 bytes; RFC 5280 serials are at most 20.)
    """
    sign, magnitude = ("-", -serial) if serial < 0 else ("", serial)
    digits = f"{magnitude:X}"
    return sign + digits.zfill(len(digits) + len(digits) % 2)


def client_cert_info(conn: SSL.Connection) -> CertInfo | None:
    """The peer's certificate fields, or ``None`` when it sent none."""
    peer = conn.get_peer_certificate()
    if peer is None:
        return None
    _, _, crypto = native.libraries()
    pointer = native.x509_ptr(peer)
    cert = peer.to_cryptography()
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertInfo(
        subject=_rfc2253(crypto.X509_get_subject_name(pointer)),
        issuer=_rfc2253(crypto.X509_get_issuer_name(pointer)),
        serial=_serial_hex(cert.serial_number),
        fingerprint=hashlib.sha1(der).hexdigest(),
        pem=cert.public_bytes(serialization.Encoding.PEM),
    )


def tls_summary(conn: SSL.Connection) -> tuple[str, str]:
    """``(SSL_get_version(), cipher name)``, e.g. ``("TLSv1.3", "TLS_AES_256_GCM_SHA384")``."""
    return str(conn.get_protocol_version_name()), str(conn.get_cipher_name() or "")


def client_tls(conn: SSL.Connection, server: model.ServerConfig) -> ClientTls:
    """Everything auth_http's Auth-SSL-* headers need, in one call after the handshake."""
    protocol, cipher = tls_summary(conn)
    outcome = verify_result(conn, server)
    info = client_cert_info(conn) if outcome.verify else None
    if info is None:
        return ClientTls(protocol, cipher, verify=outcome.verify)
    return ClientTls(
        protocol,
        cipher,
        verify=outcome.verify,
        subject=info.subject,
        issuer=info.issuer,
        serial=info.serial,
        fingerprint=info.fingerprint,
        cert_pem=info.pem,
    )
