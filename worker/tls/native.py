"""The one place that touches OpenSSL below pyOpenSSL's public API.

Two kinds of access live here and nowhere else:

* mailgate's own cffi binding of the system ``libssl.so.3``/``libcrypto.so.3`` (ABI mode).
  pyOpenSSL (through cryptography's bindings) lacks the server-side session-cache callbacks,
  the ticket-key callback, per-certificate chains, groups, ``SSL_CONF_cmd`` and more. They
  are applied to pyOpenSSL's own ``SSL_CTX``/``SSL`` pointers. That is only sound when both
  bindings run on the one libssl loaded in the process; :func:`check` proves it before
  anything else uses TLS. Debian's ``python3-openssl``/``python3-cryptography`` link the
  system library; PyPI's cryptography wheel carries a private static OpenSSL and fails it.
* pyOpenSSL's private names (``OpenSSL._util``, ``Context._context``, ``Connection``'s
  attributes and ``_raise_ssl_error``, ``X509._x509``, ``Session._session``), fenced at the
  end of this module, each with the reason it is used. They are pyOpenSSL 23's (Debian 12);
  ``tests/unit/tls/test_native.py`` fails when the installed pyOpenSSL changes any of them.
"""

from __future__ import annotations

import functools
import operator
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyOpenSSL is imported late at run time, so that -V can report its absence
    from OpenSSL import SSL

LIBSSL_SONAME = "libssl.so.3"

LIBCRYPTO_SONAME = "libcrypto.so.3"

# Opaque types are declared as incomplete structs; only OSSL_PARAM is laid out (ABI-stable).
_CDEF = """
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
typedef struct ssl_conf_ctx_st SSL_CONF_CTX;
typedef struct x509_st X509;
typedef struct X509_name_st X509_NAME;
typedef struct x509_store_st X509_STORE;
typedef struct x509_store_ctx_st X509_STORE_CTX;
typedef struct x509_lookup_st X509_LOOKUP;
typedef struct x509_lookup_method_st X509_LOOKUP_METHOD;
typedef struct stack_st OPENSSL_STACK;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_md_st EVP_MD;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_mac_ctx_st EVP_MAC_CTX;
typedef struct engine_st ENGINE;
typedef struct bio_st BIO;
typedef struct bio_method_st BIO_METHOD;
typedef struct ossl_param_st {
    const char *key;
    unsigned int data_type;
    void *data;
    size_t data_size;
    size_t return_size;
} OSSL_PARAM;

const char *OpenSSL_version(int type);
unsigned long OpenSSL_version_num(void);

long SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg);
void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, int (*cb)(int, X509_STORE_CTX *));
int SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *file, const char *path);
OPENSSL_STACK *SSL_load_client_CA_file(const char *file);
void SSL_CTX_set_client_CA_list(SSL_CTX *ctx, OPENSSL_STACK *names);
OPENSSL_STACK *SSL_CTX_get_client_CA_list(const SSL_CTX *ctx);
X509_STORE *SSL_CTX_get_cert_store(const SSL_CTX *ctx);
int SSL_CTX_set0_tmp_dh_pkey(SSL_CTX *ctx, EVP_PKEY *dhpkey);
void SSL_CTX_set_alpn_select_cb(SSL_CTX *ctx,
    int (*cb)(SSL *, const unsigned char **, unsigned char *, const unsigned char *,
              unsigned int, void *),
    void *arg);
int SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *ctx,
    int (*cb)(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *, EVP_MAC_CTX *, int));
int SSL_CTX_remove_session(SSL_CTX *ctx, SSL_SESSION *session);

SSL_CONF_CTX *SSL_CONF_CTX_new(void);
unsigned int SSL_CONF_CTX_set_flags(SSL_CONF_CTX *cctx, unsigned int flags);
void SSL_CONF_CTX_set_ssl_ctx(SSL_CONF_CTX *cctx, SSL_CTX *ctx);
int SSL_CONF_cmd(SSL_CONF_CTX *cctx, const char *cmd, const char *value);
int SSL_CONF_cmd_value_type(SSL_CONF_CTX *cctx, const char *cmd);
int SSL_CONF_CTX_finish(SSL_CONF_CTX *cctx);
void SSL_CONF_CTX_free(SSL_CONF_CTX *cctx);

int SSL_version(const SSL *ssl);
int SSL_has_pending(const SSL *s);
SSL_CTX *SSL_get_SSL_CTX(const SSL *ssl);
SSL_SESSION *SSL_get_session(const SSL *ssl);
long SSL_get_verify_result(const SSL *ssl);
void SSL_SESSION_get0_ticket(const SSL_SESSION *s, const unsigned char **tick, size_t *len);

void SSL_CTX_sess_set_new_cb(SSL_CTX *ctx, int (*new_session_cb)(SSL *, SSL_SESSION *));
void SSL_CTX_sess_set_remove_cb(SSL_CTX *ctx, void (*remove_session_cb)(SSL_CTX *, SSL_SESSION *));
void SSL_CTX_sess_set_get_cb(SSL_CTX *ctx,
    SSL_SESSION *(*get_session_cb)(SSL *, const unsigned char *, int, int *));
int i2d_SSL_SESSION(const SSL_SESSION *in, unsigned char **pp);
SSL_SESSION *d2i_SSL_SESSION(SSL_SESSION **a, const unsigned char **pp, long length);
const unsigned char *SSL_SESSION_get_id(const SSL_SESSION *s, unsigned int *len);
void SSL_SESSION_free(SSL_SESSION *session);
"""

_CDEF_CRYPTO = """
int OPENSSL_sk_num(const OPENSSL_STACK *sk);
void *OPENSSL_sk_value(const OPENSSL_STACK *sk, int i);
const EVP_MD *EVP_sha1(void);
int X509_NAME_digest(const X509_NAME *name, const EVP_MD *type, unsigned char *md,
                     unsigned int *len);
int X509_NAME_print_ex(BIO *out, const X509_NAME *name, int indent, unsigned long flags);
X509_NAME *X509_get_subject_name(const X509 *x);
X509_NAME *X509_get_issuer_name(const X509 *x);
const char *X509_verify_cert_error_string(long n);
X509_LOOKUP *X509_STORE_add_lookup(X509_STORE *store, X509_LOOKUP_METHOD *m);
X509_LOOKUP_METHOD *X509_LOOKUP_file(void);
int X509_LOOKUP_ctrl(X509_LOOKUP *ctx, int cmd, const char *argc, long argl, char **ret);
int X509_STORE_set_flags(X509_STORE *store, unsigned long flags);

BIO *BIO_new(const BIO_METHOD *type);
const BIO_METHOD *BIO_s_mem(void);
BIO *BIO_new_file(const char *filename, const char *mode);
int BIO_read(BIO *b, void *data, int dlen);
long BIO_ctrl(BIO *bp, int cmd, long larg, void *parg);
int BIO_free(BIO *a);
EVP_PKEY *PEM_read_bio_Parameters(BIO *bp, EVP_PKEY **x);
void EVP_PKEY_free(EVP_PKEY *pkey);

const EVP_CIPHER *EVP_aes_128_cbc(void);
const EVP_CIPHER *EVP_aes_256_cbc(void);
int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl,
                       const unsigned char *key, const unsigned char *iv);
int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl,
                       const unsigned char *key, const unsigned char *iv);
int EVP_MAC_CTX_set_params(EVP_MAC_CTX *ctx, const OSSL_PARAM params[]);
int RAND_bytes(unsigned char *buf, int num);

unsigned long ERR_get_error_all(const char **file, int *line, const char **func,
                                const char **data, int *flags);
void ERR_error_string_n(unsigned long e, char *buf, size_t len);
void ERR_clear_error(void);
"""

INSTALL_HINT = (
    "install Debian's packages (apt-get install python3-openssl python3-cryptography "
    "python3-cffi) and run mailgate from a venv made with "
    "'/usr/bin/python3 -m venv --system-site-packages' that has no pyOpenSSL or "
    "cryptography of its own from PyPI ('make install' does all of this)"
)


class LibsslMismatch(Exception):
    """pyOpenSSL does not run on the system libssl that mailgate's own bindings use."""


@dataclass(frozen=True, slots=True)
class LibsslReport:
    """What :func:`check` found, for ``mailgate -V`` and the error message."""

    system_version: str  # OpenSSL_version(0) through our binding of libssl.so.3
    pyopenssl_version: str  # pyOpenSSL's own version string
    pyopenssl_openssl: str  # OpenSSL_version(0) as pyOpenSSL's binding sees it
    pyopenssl_path: str
    same_library: bool
    problem: str = ""  # why the check failed; empty when it passed


@functools.cache
def _libraries() -> tuple[Any, Any, Any]:
    import cffi  # Debian's python3-cffi; imported late so -v works without it

    ffi = cffi.FFI()
    ffi.cdef(_CDEF + _CDEF_CRYPTO)
    # dlopen of the soname returns the copy already mapped by cryptography's bindings,
    # when those were linked against it: that is exactly what check() relies on.
    return ffi, ffi.dlopen(LIBSSL_SONAME), ffi.dlopen(LIBCRYPTO_SONAME)


def _binding() -> tuple[Any, Any]:
    ffi, ssl, _ = _libraries()
    return ffi, ssl


def _inspect() -> LibsslReport:
    try:
        import OpenSSL

        py_ffi, py_lib = pyopenssl_binding()
    except ImportError as err:
        return LibsslReport("?", "not installed", "?", "?", False, f"pyOpenSSL: {err}")

    theirs = py_lib.OpenSSL_version(0)
    their_text = py_ffi.string(theirs).decode()
    base = {
        "pyopenssl_version": OpenSSL.__version__,
        "pyopenssl_openssl": their_text,
        "pyopenssl_path": OpenSSL.__file__ or "?",
    }
    try:
        ffi, lib = _binding()
    except (ImportError, OSError) as err:
        return LibsslReport("?", **base, same_library=False, problem=f"{LIBSSL_SONAME}: {err}")

    ours = lib.OpenSSL_version(0)
    our_text = ffi.string(ours).decode()
    # Equal pointers to the version string mean one libcrypto/libssl image in the process;
    # equal text alone would not (a static copy of the same release prints the same words).
    same = int(ffi.cast("uintptr_t", ours)) == int(py_ffi.cast("uintptr_t", theirs))
    problem = "" if same else "pyOpenSSL runs on a different OpenSSL copy than the system's"
    return LibsslReport(our_text, **base, same_library=same, problem=problem)


@functools.cache
def report() -> LibsslReport:
    """Inspect the process once: which OpenSSL each binding runs on."""
    return _inspect()


def check() -> LibsslReport:
    """Raise :class:`LibsslMismatch` unless pyOpenSSL runs on the system ``libssl.so.3``."""
    found = report()
    if found.same_library:
        return found
    raise LibsslMismatch(
        f"pyOpenSSL {found.pyopenssl_version} ({found.pyopenssl_path}) runs on "
        f'"{found.pyopenssl_openssl}", but the system {LIBSSL_SONAME} is '
        f'"{found.system_version}": {found.problem}; mailgate needs both to be one library: '
        f"{INSTALL_HINT}"
    )


# -- calls on pyOpenSSL's own objects ---------------------------------------------------------
# pyOpenSSL's pointers belong to cryptography's cffi instance; ours to this one. A pointer
# crosses between the two as an integer address, which is sound only on one library image,
# so every accessor below runs check() first (cached after the first call).

ERR_TXT_STRING = 0x02


def libraries() -> tuple[Any, Any, Any]:
    """``(ffi, libssl, libcrypto)`` after :func:`check` proved pyOpenSSL runs on them."""
    check()
    return _libraries()


def _cast(ctype: str, their_pointer: Any) -> Any:
    py_ffi = pyopenssl_binding()[0]
    ffi = libraries()[0]
    return ffi.cast(ctype, int(py_ffi.cast("uintptr_t", their_pointer)))


def ctx_ptr(ctx: Any) -> Any:
    """The ``SSL_CTX *`` of a pyOpenSSL ``SSL.Context``, typed for this binding."""
    return _cast("SSL_CTX *", ctx._context)


def ssl_ptr(conn: Any) -> Any:
    """The ``SSL *`` of a pyOpenSSL ``SSL.Connection``."""
    return _cast("SSL *", conn._ssl)


def x509_ptr(cert: Any) -> Any:
    """The ``X509 *`` of a pyOpenSSL ``crypto.X509``."""
    return _cast("X509 *", cert._x509)


def session_ptr(session: Any) -> Any:
    """The ``SSL_SESSION *`` of a pyOpenSSL ``SSL.Session``."""
    return _cast("SSL_SESSION *", session._session)


def error_text() -> str:
    """Drain OpenSSL's error queue into nginx's suffix: ``" (SSL: error:...:reason)"``.

    Empty when the queue is empty, as nginx prints nothing then.
    """
    ffi, _, crypto = libraries()
    data = ffi.new("const char **")
    flags = ffi.new("int *")
    buf = ffi.new("char[256]")
    parts = []
    while code := crypto.ERR_get_error_all(ffi.NULL, ffi.NULL, ffi.NULL, data, flags):
        crypto.ERR_error_string_n(code, buf, len(buf))
        text = ffi.string(buf).decode(errors="replace")
        extra = ffi.string(data[0]).decode(errors="replace") if data[0] != ffi.NULL else ""
        if extra and flags[0] & ERR_TXT_STRING:
            text += ":" + extra
        parts.append(" " + text)
    return f" (SSL:{''.join(parts)})" if parts else ""


def clear_errors() -> None:
    """Forget stale errors before a call whose failure we are about to describe."""
    libraries()[2].ERR_clear_error()


@functools.cache
def has_pending() -> Callable[[Any], bool]:
    """``SSL_has_pending`` on pyOpenSSL's own ``SSL *`` cdata (``conn._ssl``).

    Hot path (after every short TLS read): cryptography's binding lacks the function, so the
    pointer crosses to this binding as an address; the types are looked up once, here.
    """
    py_ffi = pyopenssl_binding()[0]
    ffi, lib, _ = libraries()
    ssl_type, address = ffi.typeof("SSL *"), py_ffi.typeof("uintptr_t")
    cast, their_cast, pending = ffi.cast, py_ffi.cast, lib.SSL_has_pending
    return lambda ssl: bool(pending(cast(ssl_type, int(their_cast(address, ssl)))))


# cffi callbacks and the buffers they read must outlive every connection of their context;
# OpenSSL holds only raw pointers. A weak key lets them go with the context itself.
_KEEP_ALIVE: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def keep_alive(ctx: Any, *objects: Any) -> None:
    """Keep ``objects`` (cffi callbacks, buffers) alive as long as ``ctx`` is."""
    _KEEP_ALIVE.setdefault(ctx, []).extend(objects)


# -- pyOpenSSL's privates --------------------------------------------------------------------
# Everything below reaches into pyOpenSSL 23 beyond its public API. Each name is pinned by
# tests/unit/tls/test_native.py against the installed pyOpenSSL.


def pyopenssl_binding() -> tuple[Any, Any]:
    """pyOpenSSL's own cffi ``(ffi, lib)`` (private ``OpenSSL._util``).

    The stream's hot path (handshake, read, write, shutdown) calls ``SSL_*`` through it on
    the ``SSL *`` it made with it: the same functions pyOpenSSL's methods call, without their
    exception for every ``WANT_READ`` and their fresh buffer per read. Pointers made here need
    no :func:`check`: they never cross into mailgate's binding. Callers hoist the result to
    module level, so no call is added per read or write.
    """
    from OpenSSL._util import ffi, lib

    return ffi, lib


# ``Context._context``: the ``SSL_CTX *`` in pyOpenSSL's binding, for SSL_new() in the stream
# (which makes its ``SSL *`` itself, see :func:`connection`). attrgetter: no Python frame.
context_cdata: Callable[[SSL.Context], Any] = operator.attrgetter("_context")

# ``Connection._ssl``: the ``SSL *`` in pyOpenSSL's binding (tests ask it SSL_session_reused).
connection_cdata: Callable[[SSL.Connection], Any] = operator.attrgetter("_ssl")


def set_read_ahead(ctx: SSL.Context) -> None:
    """``SSL_CTX_set_read_ahead(ctx, 1)``, which pyOpenSSL 23 does not offer."""
    pyopenssl_binding()[1].SSL_CTX_set_read_ahead(ctx._context, 1)


# What SSL.Connection.__init__ (pyOpenSSL 23) sets on the instance; :func:`connection` sets
# exactly these, and the test compares them with a real Connection's __dict__.
CONNECTION_ATTRIBUTES = frozenset(
    {
        "_ssl",
        "_context",
        "_app_data",
        "_alpn_select_callback_args",
        "_verify_helper",
        "_verify_callback",
        "_cookie_generate_helper",
        "_cookie_verify_helper",
        "_socket",
        "_into_ssl",
        "_from_ssl",
    }
)


def connection(ssl: Any, ctx: SSL.Context, sock: socket.socket) -> SSL.Connection:
    """A pyOpenSSL ``Connection`` around an ``SSL *`` made elsewhere: the attributes its
    constructor sets (pyOpenSSL 23), without a second ``SSL_new``. It is left out of the
    reverse mapping that pyOpenSSL's own callbacks use; mailgate sets none of those.

    The stream makes its ``SSL *`` itself because the constructor (mode, weak reverse
    mapping, fd lookup) was a visible share of a resumption's Python time; this object is
    built later, for the few callers that read certificates or ALPN once per login.
    """
    from OpenSSL import SSL

    conn: SSL.Connection = SSL.Connection.__new__(SSL.Connection)
    conn.__dict__.update(
        _ssl=ssl,
        _context=ctx,
        _app_data=None,
        _alpn_select_callback_args=None,
        _verify_helper=getattr(ctx, "_verify_helper", None),
        _verify_callback=getattr(ctx, "_verify_callback", None),
        _cookie_generate_helper=getattr(ctx, "_cookie_generate_helper", None),
        _cookie_verify_helper=getattr(ctx, "_cookie_verify_helper", None),
        _socket=sock,
        _into_ssl=None,
        _from_ssl=None,
    )
    return conn


def raise_ssl_error(conn: SSL.Connection, ssl: Any, result: int) -> None:
    """pyOpenSSL's own exception for a failed call on ``ssl`` (``Connection._raise_ssl_error``):
    the stream's errors then read exactly as pyOpenSSL's methods would word them. Returns
    only when OpenSSL reports no error."""
    conn._raise_ssl_error(ssl, result)
