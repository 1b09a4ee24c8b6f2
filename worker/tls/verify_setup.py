"""Client certificates, the context's side: what to ask, whom to trust, and a digest of it.

As in nginx, OpenSSL is told to request a certificate (``SSL_VERIFY_PEER`` alone) with a verify
callback that accepts everything, so the handshake always completes; the session then decides
after it (:mod:`mailgate.worker.tls.client_cert`). The digest of the whole policy goes into
the session ID context (:mod:`mailgate.worker.tls.context`), so a session resumes only where
its certificate would have been judged the same way.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any

from OpenSSL import SSL

from mailgate.config import model
from mailgate.config.setters import full_path
from mailgate.worker.tls import native
from mailgate.worker.tls.errors import TLSConfigError

SSL_VERIFY_PEER = 0x01
X509_L_FILE_LOAD = 1
X509_FILETYPE_PEM = 1
X509_V_FLAG_CRL_CHECK = 0x4
X509_V_FLAG_CRL_CHECK_ALL = 0x8


def _accept(ok: int, store: Any) -> int:
    """nginx's verify callback: record the error (OpenSSL does) but never stop the handshake."""
    return 1


_ACCEPT_CALLBACK: Any = None


def _accept_callback() -> Any:
    global _ACCEPT_CALLBACK
    if _ACCEPT_CALLBACK is None:  # one callback for every context, alive for the process
        ffi = native.libraries()[0]
        _ACCEPT_CALLBACK = ffi.callback("int(int, X509_STORE_CTX *)", _accept)
    return _ACCEPT_CALLBACK


def apply_verification(ctx: SSL.Context, server: model.ServerConfig) -> None:
    """``ssl_verify_client``, ``ssl_verify_depth``, the two CA files and ``ssl_crl``."""
    if server.ssl_verify_client is model.VerifyClient.OFF:
        return  # as nginx: the CA and CRL files are not even read then
    _, ssl_lib, _ = native.libraries()
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
    ffi, ssl_lib, _ = native.libraries()
    native.clear_errors()
    if ssl_lib.SSL_CTX_load_verify_locations(native.ctx_ptr(ctx), path.encode(), ffi.NULL) != 1:
        raise TLSConfigError(f'SSL_CTX_load_verify_locations("{path}") failed{native.error_text()}')


def _send_ca_names(ctx: SSL.Context, path: str) -> None:
    """The CA names sent in the CertificateRequest (``ssl_client_certificate`` only)."""
    ffi, ssl_lib, _ = native.libraries()
    native.clear_errors()
    names = ssl_lib.SSL_load_client_CA_file(path.encode())
    if names == ffi.NULL:
        raise TLSConfigError(f'SSL_load_client_CA_file("{path}") failed{native.error_text()}')
    ssl_lib.SSL_CTX_set_client_CA_list(native.ctx_ptr(ctx), names)  # the context owns them now


def _load_crl(ctx: SSL.Context, path: str) -> None:
    ffi, ssl_lib, crypto = native.libraries()
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
    ffi, ssl_lib, crypto = native.libraries()
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
