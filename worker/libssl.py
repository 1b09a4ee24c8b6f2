"""Direct calls into the system ``libssl.so.3``, beside pyOpenSSL.

pyOpenSSL (through cryptography's bindings) lacks the server-side session-cache callbacks,
the ticket-key callback and ``SSL_CONF_cmd``. We bind them here with cffi in ABI mode and apply
them to pyOpenSSL's own ``SSL_CTX`` pointers. That is only sound when both bindings run on the
one libssl loaded in the process; :func:`check` proves it before anything else uses TLS.
Debian's ``python3-openssl``/``python3-cryptography`` link the system library; PyPI's
cryptography wheel carries a private static OpenSSL and fails the check.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

LIBSSL_SONAME = "libssl.so.3"

_CDEF = """
const char *OpenSSL_version(int type);
unsigned long OpenSSL_version_num(void);
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
def _binding() -> tuple[Any, Any]:
    import cffi  # Debian's python3-cffi; imported late so -v works without it

    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    # dlopen of the soname returns the copy already mapped by cryptography's bindings,
    # when those were linked against it: that is exactly what check() relies on.
    return ffi, ffi.dlopen(LIBSSL_SONAME)


def _inspect() -> LibsslReport:
    try:
        import OpenSSL
        from OpenSSL._util import ffi as py_ffi
        from OpenSSL._util import lib as py_lib
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
