"""The server certificate for localhost/127.0.0.1 and the CA file that clients trust."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate for localhost/127.0.0.1 and the CA file clients trust."""

    cert: Path
    key: Path
    ca: Path


def write_tls_files(folder: Path) -> TlsFiles:
    """A fresh trustme CA and a server certificate (chain in ``cert``) written under ``folder``."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    files = TlsFiles(folder / "server.crt", folder / "server.key", folder / "ca.crt")
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(files.cert), append=True)
    server.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files
