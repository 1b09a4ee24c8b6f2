"""Client certificates: the context settings and the decision made after the handshake.

As in nginx, OpenSSL is told to request a certificate (``SSL_VERIFY_PEER`` alone) with a verify
callback that accepts everything, so the handshake always completes; the session then reads
the verify result and decides whether to send the protocol's "cert error" or "no cert" reply
(:func:`verify_result`). That way the client learns why in its own protocol, not from an alert.
"""

from __future__ import annotations

import enum
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from mailgate.config import model
from mailgate.config.setters import full_path
from mailgate.worker.auth_http.request import ClientTls
from mailgate.worker.tls import native
from mailgate.worker.tls.errors import TLSConfigError

SSL_VERIFY_PEER = 0x01
X509_L_FILE_LOAD = 1
X509_FILETYPE_PEM = 1
X509_V_FLAG_CRL_CHECK = 0x4
X509_V_FLAG_CRL_CHECK_ALL = 0x8
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


def _accept(ok: int, store: Any) -> int:
    """nginx's verify callback: record the error (OpenSSL does) but never stop the handshake."""
    return 1


_ACCEPT_CALLBACK: Any = None


def _accept_callback() -> Any:
    global _ACCEPT_CALLBACK
    if _ACCEPT_CALLBACK is None:  # one callback for every context, alive for the process
        ffi = native.native()[0]
        _ACCEPT_CALLBACK = ffi.callback("int(int, X509_STORE_CTX *)", _accept)
    return _ACCEPT_CALLBACK


# -- context ---------------------------------------------------------------------------------


def apply_verification(ctx: SSL.Context, server: model.ServerConfig) -> None:
    """``ssl_verify_client``, ``ssl_verify_depth``, the two CA files and ``ssl_crl``."""
    if server.ssl_verify_client is model.VerifyClient.OFF:
        return  # as nginx: the CA and CRL files are not even read then
    _, ssl_lib, _ = native.native()
    ssl_lib.SSL_CTX_set_verify(native.ctx_ptr(ctx), SSL_VERIFY_PEER, _accept_callback())
    ctx.set_verify_depth(server.ssl_verify_depth)
    if server.ssl_client_certificate:
        _trust(ctx, server.ssl_client_certificate)
        _send_ca_names(ctx, server.ssl_client_certificate)
    if server.ssl_trusted_certificate:
        _trust(ctx, server.ssl_trusted_certificate)
    if server.ssl_crl:
        _load_crl(ctx, server.ssl_crl)


def _trust(ctx: SSL.Context, path: str) -> None:
    ffi, ssl_lib, _ = native.native()
    native.clear_errors()
    if ssl_lib.SSL_CTX_load_verify_locations(native.ctx_ptr(ctx), path.encode(), ffi.NULL) != 1:
        raise TLSConfigError(f'SSL_CTX_load_verify_locations("{path}") failed{native.error_text()}')


def _send_ca_names(ctx: SSL.Context, path: str) -> None:
    """The CA names sent in the CertificateRequest (``ssl_client_certificate`` only)."""
    ffi, ssl_lib, _ = native.native()
    native.clear_errors()
    names = ssl_lib.SSL_load_client_CA_file(path.encode())
    if names == ffi.NULL:
        raise TLSConfigError(f'SSL_load_client_CA_file("{path}") failed{native.error_text()}')
    ssl_lib.SSL_CTX_set_client_CA_list(native.ctx_ptr(ctx), names)  # the context owns them now


def _load_crl(ctx: SSL.Context, path: str) -> None:
    ffi, ssl_lib, crypto = native.native()
    native.clear_errors()
    store = ssl_lib.SSL_CTX_get_cert_store(native.ctx_ptr(ctx))
    lookup = crypto.X509_STORE_add_lookup(store, crypto.X509_LOOKUP_file())
    if lookup == ffi.NULL:
        raise TLSConfigError(f"X509_STORE_add_lookup() failed{native.error_text()}")
    # X509_LOOKUP_load_file() is a macro over this ctrl.
    loaded = crypto.X509_LOOKUP_ctrl(
        lookup, X509_L_FILE_LOAD, path.encode(), X509_FILETYPE_PEM, ffi.NULL
    )
    if loaded != 1:
        raise TLSConfigError(f'X509_LOOKUP_load_file("{path}") failed{native.error_text()}')
    crypto.X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL)


def policy_digest(server: model.ServerConfig) -> bytes:
    """SHA-256 over every input of the client-certificate decision, for the session ID context.

    A resumed session skips verification: the server takes the verify result and the peer
    certificate stored in the session. So a session may resume only where the same
    certificate would have been judged the same way: the same ``ssl_verify_client`` mode and
    ``ssl_verify_depth``, and the same *contents* of ``ssl_client_certificate``,
    ``ssl_trusted_certificate`` and ``ssl_crl`` (a CRL edited in place must end the sessions
    of the certificates it now revokes). Ciphers, protocols and timeouts are left out: they
    change how a session is protected, not whom it lets in.
    """
    digest = hashlib.sha256()
    fields: list[tuple[str, bytes | None]] = [("verify", server.ssl_verify_client.value.encode())]
    if server.ssl_verify_client is not model.VerifyClient.OFF:  # else no file is read
        fields += [
            ("depth", str(server.ssl_verify_depth).encode()),
            ("client", _contents(server.ssl_client_certificate)),
            ("trusted", _contents(server.ssl_trusted_certificate)),
            ("crl", _contents(server.ssl_crl)),
        ]
    # ssl_conf_command can set the policy too (VerifyMode, VerifyCAFile, ClientCAFile...):
    # every command counts, with the contents of a file it names.
    for command in server.ssl_conf_command:
        fields.append((f"conf {command.name}", command.value.encode()))
        fields.append(("conf file", _file_or_none(full_path(command.conf_prefix, command.value))))
    for name, value in fields:
        # Length-prefixed, and "unset" apart from "empty", so no two policies hash alike.
        marked = b"-" if value is None else b"+%d:" % len(value) + value
        digest.update(name.encode() + marked)
    return digest.digest()


def _file_or_none(path: str) -> bytes | None:
    """A regular file's contents; None for anything else (a value that names no file)."""
    try:
        with open(path, "rb") as fh:
            return fh.read() if stat.S_ISREG(os.fstat(fh.fileno()).st_mode) else None
    except OSError:
        return None


def _contents(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:  # OpenSSL read it a moment ago: removed or replaced since
        raise TLSConfigError(f'open() "{path}" failed ({err.errno}: {err.strerror})') from err


def client_ca_name_digests(ctx: SSL.Context) -> list[bytes]:
    """SHA-1 of each client CA name the context sends, in order (for the session ID context)."""
    ffi, ssl_lib, crypto = native.native()
    names = ssl_lib.SSL_CTX_get_client_CA_list(native.ctx_ptr(ctx))
    if names == ffi.NULL:
        return []
    digests = []
    buf, size = ffi.new("unsigned char[64]"), ffi.new("unsigned int *")
    for i in range(crypto.OPENSSL_sk_num(names)):
        name = ffi.cast("X509_NAME *", crypto.OPENSSL_sk_value(names, i))
        if crypto.X509_NAME_digest(name, crypto.EVP_sha1(), buf, size) != 1:
            raise TLSConfigError(f"X509_NAME_digest() failed{native.error_text()}")
        digests.append(bytes(ffi.buffer(buf, size[0])))
    return digests


# -- after the handshake ---------------------------------------------------------------------


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
    ffi, _, crypto = native.native()
    return str(ffi.string(crypto.X509_verify_cert_error_string(code)).decode())


def verify_result(conn: SSL.Connection, server: model.ServerConfig) -> VerifyOutcome:
    """Decide, after the handshake, as ``ngx_mail_verify_cert`` does."""
    mode = server.ssl_verify_client
    if mode is model.VerifyClient.OFF:
        return VerifyOutcome("", X509_V_OK, VerifyReply.NONE)
    _, ssl_lib, _ = native.native()
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
    ffi, ssl_lib, _ = native.native()
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
    ffi, _, crypto = native.native()
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
    _, _, crypto = native.native()
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
