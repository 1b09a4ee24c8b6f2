"""Key exchange, ALPN and ``ssl_conf_command``: context settings pyOpenSSL 23 cannot make.

Each function applies one directive the way ``ngx_event_openssl.c`` does on OpenSSL 3.0 and
fails with nginx's message, OpenSSL's reasons appended as ``(SSL: error:...)``.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Sequence
from typing import Any

from OpenSSL import SSL

from mailgate.config import model
from mailgate.config.directives import where
from mailgate.config.setters import full_path
from mailgate.worker.tls import native
from mailgate.worker.tls.errors import TLSConfigError

SSL_CTRL_SET_GROUPS_LIST = 92  # SSL_CTX_set1_groups_list() == SSL_CTX_set1_curves_list()
SSL_CONF_FLAG_FILE = 0x2
SSL_CONF_FLAG_SERVER = 0x8
SSL_CONF_FLAG_SHOW_ERRORS = 0x10
SSL_CONF_FLAG_CERTIFICATE = 0x20
SSL_CONF_TYPE_FILE = 0x2
SSL_CONF_TYPE_DIR = 0x3
SSL_CONF_TYPE_STORE = 0x5
SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_ALERT_FATAL = 2  # OpenSSL sends no_application_protocol


def apply_dhparam(ctx: SSL.Context, path: str | None) -> None:
    """``ssl_dhparam``: without it there is no DHE at all (nginx >= 1.11.0)."""
    if path is None:
        return
    ffi, ssl_lib, crypto = native.libraries()
    native.clear_errors()
    bio = crypto.BIO_new_file(path.encode(), b"r")
    if bio == ffi.NULL:
        raise TLSConfigError(f'BIO_new_file("{path}") failed{native.error_text()}')
    try:
        params = crypto.PEM_read_bio_Parameters(bio, ffi.NULL)
    finally:
        crypto.BIO_free(bio)
    if params == ffi.NULL:
        raise TLSConfigError(f'PEM_read_bio_Parameters("{path}") failed{native.error_text()}')
    if ssl_lib.SSL_CTX_set0_tmp_dh_pkey(native.ctx_ptr(ctx), params) != 1:
        crypto.EVP_PKEY_free(params)  # set0 took ownership only on success
        raise TLSConfigError(f'SSL_CTX_set0_tmp_dh_pkey("{path}") failed{native.error_text()}')


def apply_ecdh_curve(ctx: SSL.Context, curves: str) -> None:
    """``ssl_ecdh_curve``: ``auto`` keeps OpenSSL's default groups, else a colon list."""
    if curves == "auto":
        return
    ffi, ssl_lib, _ = native.libraries()
    native.clear_errors()
    text = ffi.new("char[]", curves.encode())
    if ssl_lib.SSL_CTX_ctrl(native.ctx_ptr(ctx), SSL_CTRL_SET_GROUPS_LIST, 0, text) != 1:
        raise TLSConfigError(f'SSL_CTX_set1_curves_list("{curves}") failed{native.error_text()}')


def apply_conf_commands(ctx: SSL.Context, commands: Sequence[model.ConfCommand]) -> None:
    """``ssl_conf_command``, applied last so that it overrides the other directives."""
    if not commands:
        return
    ffi, ssl_lib, _ = native.libraries()
    cctx = ssl_lib.SSL_CONF_CTX_new()
    if cctx == ffi.NULL:
        raise TLSConfigError(f"SSL_CONF_CTX_new() failed{native.error_text()}")
    try:
        ssl_lib.SSL_CONF_CTX_set_flags(
            cctx,
            SSL_CONF_FLAG_FILE
            | SSL_CONF_FLAG_SERVER
            | SSL_CONF_FLAG_CERTIFICATE
            | SSL_CONF_FLAG_SHOW_ERRORS,
        )
        ssl_lib.SSL_CONF_CTX_set_ssl_ctx(cctx, native.ctx_ptr(ctx))
        for command in commands:
            name = command.name.encode()
            value = _conf_value(command, ssl_lib.SSL_CONF_cmd_value_type(cctx, name))
            native.clear_errors()
            if ssl_lib.SSL_CONF_cmd(cctx, name, value.encode()) <= 0:
                raise TLSConfigError(
                    f'SSL_CONF_cmd("{command.name}", "{value}") failed{native.error_text()}'
                    f" {where(command.source)}"
                )
        if ssl_lib.SSL_CONF_CTX_finish(cctx) != 1:
            raise TLSConfigError(f"SSL_CONF_finish() failed{native.error_text()}")
    finally:
        ssl_lib.SSL_CONF_CTX_free(cctx)


def _conf_value(command: model.ConfCommand, value_type: int) -> str:
    """The value to hand OpenSSL: files and folders by their full names, checked to exist.

    nginx (``ngx_ssl_conf_commands``) resolves the FILE and DIR types against its
    configuration prefix, whatever the working directory. mailgate also resolves each folder
    of a DIR list (OpenSSL reads ``a:b`` as two) and a Store given as a path; nginx passes
    those as written, so they would follow the working directory.
    """
    if value_type == SSL_CONF_TYPE_FILE:
        return _checked(command, command.value, want_dir=False)
    if value_type == SSL_CONF_TYPE_DIR:
        return ":".join(_checked(command, name, want_dir=True) for name in command.value.split(":"))
    if value_type == SSL_CONF_TYPE_STORE and ":" not in command.value:  # no URI scheme
        return _checked(command, command.value, want_dir=None)
    return command.value


def _checked(command: model.ConfCommand, name: str, *, want_dir: bool | None) -> str:
    """``name`` made absolute; refused unless it exists and is a folder iff ``want_dir``.

    The check names the directive's line. It also catches a missing DIR, which OpenSSL (and
    nginx) accept, looking into it only when a client certificate needs it: such a typo would
    start fine and then fail every client verification.
    """
    path = full_path(command.conf_prefix, name)
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as err:
        raise TLSConfigError(
            f'stat() "{path}" failed ({err.errno}: {err.strerror}) {where(command.source)}'
        ) from err
    if want_dir is not None and is_dir != want_dir:
        kind = "is not a directory" if want_dir else "is a directory"
        raise TLSConfigError(f'"{path}" {kind} {where(command.source)}')
    return path


@functools.cache
def _alpn_callback(name: bytes) -> Any:
    """One selector per protocol name, shared by every context of that protocol."""
    ffi = native.libraries()[0]

    def select(ssl: Any, out: Any, outlen: Any, offered: Any, size: int, arg: Any) -> int:  # noqa: PLR0917 (C signature)
        data = bytes(ffi.buffer(offered, size))
        i = 0
        while i < len(data):
            length = data[i]
            if data[i + 1 : i + 1 + length] == name:
                out[0] = offered + i + 1  # OpenSSL copies it before ``offered`` goes away
                outlen[0] = length
                return SSL_TLSEXT_ERR_OK
            i += 1 + length
        # nginx's answer to a client that speaks ALPN but not our protocol: a fatal alert.
        return SSL_TLSEXT_ERR_ALERT_FATAL

    signature = (
        "int(SSL *, const unsigned char **, unsigned char *, const unsigned char *,"
        " unsigned int, void *)"
    )
    return ffi.callback(signature, select, error=SSL_TLSEXT_ERR_ALERT_FATAL)


def apply_alpn(ctx: SSL.Context, protocol: model.Protocol) -> None:
    """Accept only the protocol's own ALPN name (``imap``, ``pop3``, ``smtp``)."""
    ffi, ssl_lib, _ = native.libraries()
    callback = _alpn_callback(protocol.value.encode())  # cached: alive for the process
    ssl_lib.SSL_CTX_set_alpn_select_cb(native.ctx_ptr(ctx), callback, ffi.NULL)
