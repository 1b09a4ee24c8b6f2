"""The one exception that every TLS context builder raises."""

from __future__ import annotations


class TLSConfigError(Exception):
    """A TLS setting that cannot be applied; ``str()`` is the whole nginx-style message."""
