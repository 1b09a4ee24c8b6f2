"""TLS contexts: one pyOpenSSL ``Context`` per TLS-enabled ``server {}`` and config generation.

Contexts are built in the master before fork (and at ``mailgate -t``, so that a missing file,
a wrong password or a key that does not match its certificate fails the test, as in nginx) and
are never mutated after the first connection uses them.

Certificates and keys are read by mailgate itself and handed to OpenSSL from memory, so every
error names the file and the reason in one line, whether the value is a path or ``data:``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from mailgate.config import model

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)

# ssl_protocols names -> the option that disables each when it is not listed.
_PROTOCOL_OFF_OPTIONS = {
    "TLSv1": SSL.OP_NO_TLSv1,
    "TLSv1.1": SSL.OP_NO_TLSv1_1,
    "TLSv1.2": SSL.OP_NO_TLSv1_2,
    "TLSv1.3": SSL.OP_NO_TLSv1_3,
}


# pyOpenSSL exports SSL_MODE_RELEASE_BUFFERS but not this one; a non-blocking writer retries
# with a fresh slice of the same bytes, so OpenSSL must not insist on the same pointer.
_MODE_ACCEPT_MOVING_WRITE_BUFFER = 0x2


class TLSConfigError(Exception):
    """A TLS setting that cannot be applied; ``str()`` is the whole nginx-style message."""


def build_contexts(config: model.Config) -> dict[int, SSL.Context]:
    """One context for each server that needs TLS, keyed by its index in ``config.servers``."""
    return {
        index: build_context(server)
        for index, server in enumerate(config.servers)
        if server.tls_enabled
    }


def build_context(server: model.ServerConfig) -> SSL.Context:
    """Build the server's context: certificates and keys, protocols, ciphers, tickets."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    # Released buffers keep an idle TLS connection small (the memory-per-connection target).
    ctx.set_mode(_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL.MODE_RELEASE_BUFFERS)
    passwords = _read_passwords(server.ssl_password_file)
    for cert_value, key_value in zip(
        server.ssl_certificate, server.ssl_certificate_key, strict=False
    ):
        _use_certificate(ctx, cert_value)
        _use_key(ctx, key_value, passwords)
    _apply_protocols(ctx, server.ssl_protocols)
    _apply_ciphers(ctx, server)
    return ctx


def _display(value: str) -> str:
    """nginx prints ``data:`` values as ``data:...`` rather than the whole PEM."""
    return "data:..." if value.startswith("data:") else value


def _read_value(value: str, what: str, call: str) -> bytes:
    if value.startswith("data:"):
        return value[len("data:") :].encode()
    try:
        with open(value, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise TLSConfigError(
            f'cannot load {what} "{value}": {call} failed ({err.errno}: {err.strerror})'
        ) from err


def _read_passwords(path: str | None) -> list[bytes | None]:
    """The ``ssl_password_file`` lines, tried in turn; ``[None]`` when there is no file."""
    if path is None:
        return [None]
    try:
        with open(path, "rb") as fh:  # a named pipe works too: one read, as nginx does
            lines = fh.read().splitlines()
    except OSError as err:
        raise TLSConfigError(f'open() "{path}" failed ({err.errno}: {err.strerror})') from err
    passwords: list[bytes | None] = [line for line in lines if line]
    if not passwords:
        raise TLSConfigError(f'empty file "{path}"')
    return passwords


def _pem_certificates(data: bytes) -> Iterator[x509.Certificate]:
    for block in _PEM_CERT.finditer(data):
        yield x509.load_pem_x509_certificate(block.group(0))


def _use_certificate(ctx: SSL.Context, value: str) -> None:
    data = _read_value(value, "certificate", "BIO_new_file()")
    try:
        leaf, *chain = _pem_certificates(data)
    except ValueError as err:  # no certificate at all, or an undecodable one
        raise TLSConfigError(
            f'cannot load certificate "{_display(value)}": '
            f"PEM_read_bio_X509_AUX() failed (SSL: {err or 'no start line'})"
        ) from err
    ctx.use_certificate(crypto.X509.from_cryptography(leaf))
    for extra in chain:
        ctx.add_extra_chain_cert(crypto.X509.from_cryptography(extra))


def _use_key(ctx: SSL.Context, value: str, passwords: list[bytes | None]) -> None:
    if value.startswith(("engine:", "store:")):
        raise TLSConfigError(
            f'cannot load certificate key "{value}": engine and store keys are not '
            "supported by mailgate; use a PEM file or data:"
        )
    data = _read_value(value, "certificate key", "BIO_new_file()")
    last_error: Exception | None = None
    for password in passwords:
        try:
            key = serialization.load_pem_private_key(data, password)
            break
        except (ValueError, TypeError) as err:  # TypeError: encrypted key, no password given
            last_error = err
    else:
        raise TLSConfigError(
            f'cannot load certificate key "{_display(value)}": '
            f"PEM_read_bio_PrivateKey() failed ({last_error})"
        )
    try:
        ctx.use_privatekey(crypto.PKey.from_cryptography_key(key))
        ctx.check_privatekey()
    except SSL.Error as err:
        raise TLSConfigError(
            f'SSL_CTX_use_PrivateKey("{_display(value)}") failed (SSL: key values mismatch)'
        ) from err


def _apply_protocols(ctx: SSL.Context, protocols: tuple[str, ...]) -> None:
    options = 0
    for name, off in _PROTOCOL_OFF_OPTIONS.items():
        if name not in protocols:
            options |= off
    ctx.set_options(options)


def _apply_ciphers(ctx: SSL.Context, server: model.ServerConfig) -> None:
    try:
        ctx.set_cipher_list(server.ssl_ciphers.encode())
    except SSL.Error as err:
        raise TLSConfigError(
            f'SSL_CTX_set_cipher_list("{server.ssl_ciphers}") failed (SSL: no cipher match)'
        ) from err
    if server.ssl_prefer_server_ciphers:
        ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
    if not server.ssl_session_tickets:
        ctx.set_options(SSL.OP_NO_TICKET)
