"""What ``mailgate -v`` and ``-V`` print: the version, and what this build runs on."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

from mailgate.worker.tls import native

# The nginx modules whose directives mailgate understands (the config layer's tables).
MODULES = (
    "mail",
    "mail_ssl",
    "mail_imap",
    "mail_pop3",
    "mail_smtp",
    "mail_auth_http",
    "mail_proxy",
    "mail_realip",
)


def version() -> str:
    """``mailgate/0.1.0``, read from the installed distribution."""
    return "mailgate/" + importlib.metadata.version("mailgate")


def version_text() -> str:
    """``mailgate -v``: ``mailgate version: mailgate/0.1.0``."""
    return f"mailgate version: {version()}\n"


def build_text() -> str:
    """The ``-V`` lines after the version: Python, OpenSSL, the libssl check, modules."""
    report = native.report()
    check = "passed" if report.same_library else f"failed: {report.problem}"
    return (
        f"built with Python {platform.python_version()} ({sys.executable})\n"
        f"running with {report.system_version} (pyOpenSSL {report.pyopenssl_version}"
        f" on {report.pyopenssl_openssl})\n"
        f"libssl check {check}\n"
        "TLS SNI support enabled\n"
        f"modules: {' '.join(MODULES)}\n"
    )


def os_text() -> str:
    """The ``OS: Linux 6.1.0`` notice nginx logs at start."""
    return f"OS: {platform.system()} {platform.release()}"
