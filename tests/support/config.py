"""The ``mail {}`` block most gateway modules share, built once at import.

Nearly every module's ``GATEWAY_CONFIG`` opened with the same lines (auth_http, server_name and,
for TLS, the session's certificate with TLS 1.2 and 1.3); ``mail_block`` writes them so that a
module states only what is its own. The text is exactly what the modules pasted before, since
nginx runs the same file: keep ``servers`` as the indented block it was, and begin it with an
empty line where the module wants one after the shared settings.
"""

from __future__ import annotations

from collections.abc import Iterable

INDENT = "    "
SHARED = ("auth_http %%AUTH_HTTP%%", "server_name localhost")
# The session's certificate (``tls_files``) and the protocols Python's ssl clients speak.
SSL = ("ssl_certificate %%CERT%%", "ssl_certificate_key %%KEY%%", "ssl_protocols TLSv1.2 TLSv1.3")


def mail_block(servers: str, *, ssl: bool = False, settings: Iterable[str] = ()) -> str:
    """``mail { <shared settings> [<SSL>] <settings> <servers> }`` as a gateway template.

    ``settings`` are directives without their ``;``, written after the shared ones;
    ``servers`` is the rest of the block, verbatim (4-space indented, ending in a newline).
    """
    directives = [*SHARED, *(SSL if ssl else ()), *settings]
    lines = "".join(f"{INDENT}{directive};\n" for directive in directives)
    return f"\nmail {{\n{lines}{servers}}}\n"
