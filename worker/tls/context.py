"""TLS contexts: one pyOpenSSL ``Context`` per TLS-enabled ``server {}`` and config generation.

Contexts are built in the master before fork (and at ``mailgate -t``, so that a missing file,
a wrong password or a key that does not match its certificate fails the test, as in nginx) and
are never mutated after the first connection uses them.

Certificates and keys are read by mailgate itself and handed to OpenSSL from memory, so every
error names the file and the reason in one line, whether the value is a path or ``data:``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL, crypto

from mailgate.config import model
from mailgate.shm import zones
from mailgate.worker.tls import (
    native,
    params,
    session_cache,
    ticket_key_files,
    ticket_key_zone,
    verify_setup,
)
from mailgate.worker.tls.errors import TLSConfigError

if TYPE_CHECKING:  # the name changed across cryptography releases; only mypy needs it
    from cryptography.hazmat.primitives.asymmetric.types import (
        PRIVATE_KEY_TYPES as PrivateKey,
    )

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

# SSL_OP_IGNORE_UNEXPECTED_EOF (OpenSSL 3.0, set by nginx too): a client that drops TCP without
# close_notify reads as a plain EOF. Without it OpenSSL treats that EOF as a fatal error, and a
# fatal alert removes the session from the cache (ssl3_send_alert): mail clients rarely send
# close_notify, so most sessions would never resume.
_OP_IGNORE_UNEXPECTED_EOF = 1 << 7


# ngx_mail_ssl_sess_id_ctx: the string that starts every mail session ID context.
SESSION_ID_CONTEXT_PREFIX = b"MAIL"
SSL_CTRL_CHAIN_CERT = 89  # SSL_CTX_add1_chain_cert(): larg 1 = take a reference (88 is set0_chain)

__all__ = ["Contexts", "TLSConfigError", "build_context", "build_contexts"]


class Contexts(Mapping[int, SSL.Context]):
    """The TLS contexts of one config generation: one per TLS-enabled ``server {}``, keyed by
    the server's index in ``config.servers``. Built in the master before fork (and by
    ``mailgate -t``); the workers inherit them and find one per connection with
    :meth:`for_server`."""

    __slots__ = ("_by_index", "_by_server")

    def __init__(
        self, servers: Sequence[model.ServerConfig], by_index: Mapping[int, SSL.Context]
    ) -> None:
        self._by_index = dict(by_index)
        # A worker hands each session the very ServerConfig object of ``servers``, so its
        # identity finds the context: hashing a frozen ServerConfig (every directive of the
        # block) costs about ten times as much, on every connection.
        self._by_server = {
            id(server): self._by_index[index]
            for index, server in enumerate(servers)
            if index in self._by_index
        }

    def __getitem__(self, index: int) -> SSL.Context:
        return self._by_index[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._by_index)

    def __len__(self) -> int:
        return len(self._by_index)

    def for_server(self, server: model.ServerConfig) -> SSL.Context | None:
        """The context of ``server`` (one of the ``servers`` given); None without TLS."""
        return self._by_server.get(id(server))


def build_contexts(config: model.Config) -> Contexts:
    """One context for each server that needs TLS, keyed by its index in ``config.servers``."""
    by_index = {
        index: build_context(server)
        for index, server in enumerate(config.servers)
        if server.tls_enabled
    }
    return Contexts(config.servers, by_index)


def build_context(server: model.ServerConfig) -> SSL.Context:
    """Build the server's context, in the order of ``ngx_mail_ssl_merge_conf``.

    Call :func:`notes` for the warnings to log about settings that run as a fallback.
    """
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    # Released buffers keep an idle TLS connection small (the memory-per-connection target).
    ctx.set_mode(_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL.MODE_RELEASE_BUFFERS)
    ctx.set_options(_OP_IGNORE_UNEXPECTED_EOF)
    # As nginx: OpenSSL reads whatever the socket holds into its buffer instead of a record
    # header and then its body, two system calls per record (a TLS 1.2 handshake's last flight
    # is three records). The stream asks SSL_has_pending() before it waits for the socket.
    native.set_read_ahead(ctx)
    _apply_protocols(ctx, server.ssl_protocols)
    params.apply_alpn(ctx, server.protocol)
    _apply_ciphers(ctx, server)
    leaves = _apply_certificates(ctx, server)
    _apply_certificate_compression(server)
    verify_setup.apply_verification(ctx, server)
    params.apply_dhparam(ctx, server.ssl_dhparam)
    params.apply_ecdh_curve(ctx, server.ssl_ecdh_curve)
    zone = _apply_session_cache(ctx, server, leaves)
    if not server.ssl_session_tickets:
        ctx.set_options(SSL.OP_NO_TICKET)
    ticket_key_files.install(ctx, ticket_key_files.load_keys(server.ssl_session_ticket_key))
    if zone is not None and server.ssl_session_tickets and not server.ssl_session_ticket_key:
        # nginx 1.23.2: no key files but a shared zone, so the zone holds rotating keys.
        # Without either, OpenSSL's own random keys serve: made here with the context, in
        # the master before fork, so every worker of a generation shares them.
        ticket_key_zone.install(ctx, zone, int(server.ssl_session_timeout))
    params.apply_conf_commands(ctx, server.ssl_conf_command)
    return ctx


def _apply_certificates(ctx: SSL.Context, server: model.ServerConfig) -> list[x509.Certificate]:
    """Every certificate/key pair; returns the leaf certificates, in order."""
    passwords = _read_passwords(server.ssl_password_file)
    leaves = []
    for cert_value, key_value in zip(
        server.ssl_certificate, server.ssl_certificate_key, strict=False
    ):
        leaves.append(_use_certificate(ctx, cert_value))
        _use_key(ctx, key_value, passwords)
    return leaves


def _apply_certificate_compression(server: model.ServerConfig) -> None:
    # RFC 8879 needs OpenSSL >= 3.2; Debian 12's 3.0 has none, so "on" cannot be honoured.
    if server.ssl_certificate_compression:
        raise TLSConfigError(
            '"ssl_certificate_compression on" needs OpenSSL 3.2 or later; the system '
            f'OpenSSL is "{native.report().system_version}" in {server.source}'
        )


def _builtin_size(cache: model.SessionCache) -> int:
    return cache.builtin_size if cache.builtin else model.SessionCache().builtin_size


def _apply_session_cache(
    ctx: SSL.Context, server: model.ServerConfig, leaves: list[x509.Certificate]
) -> zones.Zone | None:
    """``ngx_ssl_session_cache``: timeout, session ID context, then the cache mode.

    Returns the shared zone, if the server names one. The master attached it before this
    runs (``master/zones.py``); otherwise (tests) it is attached here, for this process.
    """
    ctx.set_timeout(int(server.ssl_session_timeout))
    ctx.set_session_id(_session_id_context(ctx, server, leaves))
    cache = server.ssl_session_cache
    if cache.off:
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        return None
    if cache.shared_name is not None:
        try:
            zone = zones.registry.zone(cache.shared_name, cache.shared_size)
        except zones.ZoneError as err:
            raise TLSConfigError(f"{err} in {server.source}") from err
        session_cache.install(ctx, server, zone)
        return zone
    if not cache.builtin and cache.shared_name is None:
        # "none": promise resumption but store nothing; Outlook Express needs the promise.
        ctx.set_session_cache_mode(
            SSL.SESS_CACHE_SERVER | SSL.SESS_CACHE_NO_AUTO_CLEAR | SSL.SESS_CACHE_NO_INTERNAL_STORE
        )
        session_cache.set_cache_size(ctx, 1)
        return None
    ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    session_cache.set_cache_size(ctx, _builtin_size(cache))
    return None


def _session_id_context(
    ctx: SSL.Context, server: model.ServerConfig, leaves: list[x509.Certificate]
) -> bytes:
    """SHA-256 over "MAIL", each certificate's SHA-1, each client CA name's SHA-1 and the
    digest of the whole client-certificate policy (:func:`verify_setup.policy_digest`).

    OpenSSL resumes a session, by ID or by ticket, only where its context matches, so a
    session made under one server block never resumes under another that would have judged
    its client certificate differently, even when they share a session cache zone or ticket
    keys (CVE-2025-23419). 32 bytes: SSL_MAX_SID_CTX_LENGTH.
    """
    digest = hashlib.sha256(SESSION_ID_CONTEXT_PREFIX)
    for leaf in leaves:
        digest.update(leaf.fingerprint(hashes.SHA1()))
    for name_digest in verify_setup.client_ca_name_digests(ctx):
        digest.update(name_digest)
    digest.update(verify_setup.policy_digest(server))
    return digest.digest()


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


def _use_certificate(ctx: SSL.Context, value: str) -> x509.Certificate:
    data = _read_value(value, "certificate", "BIO_new_file()")
    try:
        leaf, *chain = _pem_certificates(data)
    except ValueError as err:  # no certificate at all, or an undecodable one
        raise TLSConfigError(
            f'cannot load certificate "{_display(value)}": '
            f"PEM_read_bio_X509_AUX() failed (SSL: {err or 'no start line'})"
        ) from err
    ctx.use_certificate(crypto.X509.from_cryptography(leaf))
    # Each chain belongs to the certificate just set (RSA and ECDSA chains differ);
    # add_extra_chain_cert would send one shared chain with whichever leaf is chosen.
    ssl_lib = native.libraries()[1]
    for extra in chain:
        cert = crypto.X509.from_cryptography(extra)  # keeps the X509 alive across the call
        if (
            ssl_lib.SSL_CTX_ctrl(native.ctx_ptr(ctx), SSL_CTRL_CHAIN_CERT, 1, native.x509_ptr(cert))
            != 1
        ):
            raise TLSConfigError(
                f'SSL_CTX_add1_chain_cert("{_display(value)}") failed{native.error_text()}'
            )
    return leaf


def _use_key(ctx: SSL.Context, value: str, passwords: list[bytes | None]) -> None:
    if value.startswith(("engine:", "store:")):
        raise TLSConfigError(
            f'cannot load certificate key "{value}": engine and store keys are not '
            "supported by mailgate; use a PEM file or data:"
        )
    data = _read_value(value, "certificate key", "BIO_new_file()")
    key = _load_key(data, value, passwords)
    try:
        ctx.use_privatekey(crypto.PKey.from_cryptography_key(key))
        ctx.check_privatekey()
    except SSL.Error as err:
        raise TLSConfigError(
            f'SSL_CTX_use_PrivateKey("{_display(value)}") failed (SSL: key values mismatch)'
        ) from err


def _load_key(data: bytes, value: str, passwords: list[bytes | None]) -> PrivateKey:
    """Decrypt with each ``ssl_password_file`` line in turn, but only when the key is
    encrypted: like OpenSSL's password callback, a password file never breaks a plain key."""
    attempts: list[bytes | None] = [None, *(p for p in passwords if p is not None)]
    reason = ""
    for password in attempts:
        try:
            return serialization.load_pem_private_key(data, password)
        except TypeError as err:  # encrypted and no password yet, or the reverse
            reason = str(err)
        except ValueError as err:  # a wrong password, or no key at all
            reason = str(err.args[0]) if err.args else "bad key"
            if password is None:
                break  # a plain key that does not parse: passwords will not help
    raise TLSConfigError(
        f'cannot load certificate key "{_display(value)}": '
        f"PEM_read_bio_PrivateKey() failed (SSL: {reason})"
    )


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
