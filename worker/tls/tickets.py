"""Session tickets: one key's fields and the OpenSSL callback that seals and opens tickets.

Both key sources use it: nginx-style key files (:mod:`mailgate.worker.tls.ticket_key_files`)
and the rotating keys of a shared zone (:mod:`mailgate.worker.tls.ticket_key_zone`). The
ticket layout is OpenSSL's own (name | IV | ciphertext | HMAC, HMAC-SHA256), so tickets made by
nginx with the same key files resume here and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from OpenSSL import SSL

from mailgate.worker.tls import native
from mailgate.worker.tls.errors import TLSConfigError

NAME_SIZE = 16
IV_SIZE = 16  # EVP_MAX_IV_LENGTH; AES-CBC uses all of it
TLS1_3_VERSION = 0x0304
OSSL_PARAM_UTF8_STRING = 4
OSSL_PARAM_OCTET_STRING = 5
OSSL_PARAM_UNMODIFIED = 2**64 - 1  # (size_t) -1

# Callback results (SSL_CTX_set_tlsext_ticket_key_evp_cb(3)).
_NO_TICKET = 0  # encrypt: issue none; decrypt: unknown key, do a full handshake
_OK = 1
_OK_RENEW = 2


@dataclass(frozen=True, slots=True)
class TicketKey:
    """One ticket key (from a key file or a shared zone), its fields in a fixed order."""

    name: bytes
    aes_key: bytes = field(repr=False)
    hmac_key: bytes = field(repr=False)


@dataclass(slots=True)
class NativeKey:
    """A key's C-side buffers, built once so the callback allocates nothing per ticket."""

    name: bytes
    cipher: Any
    aes_key: Any
    params: Any  # OSSL_PARAM[3]: the HMAC key, the digest, the end marker
    owned: list[Any]


def native_key(key: TicketKey) -> NativeKey:
    ffi, _, crypto = native.libraries()
    cipher = crypto.EVP_aes_128_cbc() if len(key.aes_key) == 16 else crypto.EVP_aes_256_cbc()
    hmac_key = ffi.new("unsigned char[]", key.hmac_key)
    digest = ffi.new("char[]", b"SHA256")
    names = (ffi.new("char[]", b"key"), ffi.new("char[]", b"digest"))
    params = ffi.new("OSSL_PARAM[3]")
    fields = (
        (names[0], OSSL_PARAM_OCTET_STRING, hmac_key, len(key.hmac_key)),
        (names[1], OSSL_PARAM_UTF8_STRING, digest, len(b"SHA256")),
    )
    for param, (name, kind, data, size) in zip(params, fields, strict=False):
        param.key, param.data_type, param.data, param.data_size = name, kind, data, size
        param.return_size = OSSL_PARAM_UNMODIFIED
    params[2].key = ffi.NULL  # OSSL_PARAM_END
    aes_key = ffi.new("unsigned char[]", key.aes_key)
    return NativeKey(key.name, cipher, aes_key, params, [hmac_key, digest, *names])


def ticket_callback(
    sealing: Callable[[], NativeKey | None],
    find: Callable[[bytes], tuple[int, NativeKey] | None],
    older: Callable[[int], None],
) -> Any:
    """The cffi callback for ``SSL_CTX_set_tlsext_ticket_key_evp_cb``.

    New tickets are sealed with ``sealing()`` (None: issue no ticket); a ticket is opened with
    the key ``find`` names by the ticket's key name (its index 0 is the sealing key). A ticket
    opened with another key is renewed, and ``older(index)`` is told; under TLS 1.3 every
    ticket is renewed, as nginx does. An exception inside means "no ticket": a full handshake,
    never a crash.
    """
    ffi, ssl_lib, crypto = native.libraries()

    def seal(name: Any, iv: Any, cctx: Any, hctx: Any) -> int:
        key = sealing()
        if key is None:
            return _NO_TICKET
        if crypto.RAND_bytes(iv, IV_SIZE) != 1:
            return -1
        if crypto.EVP_EncryptInit_ex(cctx, key.cipher, ffi.NULL, key.aes_key, iv) != 1:
            return -1
        if crypto.EVP_MAC_CTX_set_params(hctx, key.params) != 1:
            return -1
        ffi.memmove(name, key.name, NAME_SIZE)
        return _OK

    def open_(ssl: Any, name: Any, iv: Any, cctx: Any, hctx: Any) -> int:
        found = find(bytes(ffi.buffer(name, NAME_SIZE)))
        if found is None:
            return _NO_TICKET
        i, key = found
        if crypto.EVP_MAC_CTX_set_params(hctx, key.params) != 1:
            return -1
        if crypto.EVP_DecryptInit_ex(cctx, key.cipher, ffi.NULL, key.aes_key, iv) != 1:
            return -1
        if i != 0:
            older(i)
        if i != 0 or ssl_lib.SSL_version(ssl) == TLS1_3_VERSION:
            return _OK_RENEW  # move the client to the sealing key; TLS 1.3: always (nginx)
        return _OK

    def dispatch(ssl: Any, name: Any, iv: Any, cctx: Any, hctx: Any, enc: int) -> int:  # noqa: PLR0917 (C signature)
        return seal(name, iv, cctx, hctx) if enc == 1 else open_(ssl, name, iv, cctx, hctx)

    return ffi.callback(
        "int(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *, EVP_MAC_CTX *, int)",
        dispatch,
        error=_NO_TICKET,
    )


def install_callback(ctx: SSL.Context, callback: Any) -> None:
    """Make ``callback`` (from :func:`ticket_callback`) seal and open the tickets of ``ctx``."""
    ssl_lib = native.libraries()[1]
    if ssl_lib.SSL_CTX_set_tlsext_ticket_key_evp_cb(native.ctx_ptr(ctx), callback) != 1:
        raise TLSConfigError("SSL_CTX_set_tlsext_ticket_key_evp_cb() failed" + native.error_text())
