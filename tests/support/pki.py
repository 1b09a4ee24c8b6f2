"""TLS files made for the tests: the session's server certificate (``TlsFiles``) and the
TLS unit tests' PKI (``Pki``: RSA and ECDSA leaves, client certificates, a CRL, a second CA)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate for localhost/127.0.0.1 and the CA file clients trust."""

    cert: Path
    key: Path
    ca: Path


def write_tls_files(folder: Path) -> TlsFiles:
    """A fresh trustme CA and a server certificate (chain in ``cert``) written under ``folder``."""
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    files = TlsFiles(folder / "server.crt", folder / "server.key", folder / "ca.crt")
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(files.cert), append=True)
    server.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


@dataclass(frozen=True)
class Pki:
    """Paths of every file the tests use, all PEM."""

    folder: Path
    ca: Path
    rsa_cert: Path
    rsa_key: Path
    ecdsa_cert: Path
    ecdsa_key: Path
    client_cert: Path  # issued by ``ca``; cert and key in one file, as s_client takes it
    revoked_cert: Path  # issued by ``ca`` and listed in ``crl``
    stranger_cert: Path  # issued by another CA
    deep_cert: Path  # issued by an intermediate of ``ca``
    deep_chain: Path  # that intermediate, for ``s_client -cert_chain``
    crl: Path
    other_ca: Path

    def pair(self, kind: str = "rsa") -> dict[str, Any]:
        cert, key = (
            (self.rsa_cert, self.rsa_key)
            if kind == "rsa"
            else (
                self.ecdsa_cert,
                self.ecdsa_key,
            )
        )
        return {"ssl_certificate": (str(cert),), "ssl_certificate_key": (str(key),)}


def _write_leaf(leaf: trustme.LeafCert, path: Path) -> None:
    path.write_bytes(
        b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + leaf.private_key_pem.bytes()
    )


def revocation_list(ca: trustme.CA, revoked_pem: bytes) -> bytes:
    """A PEM CRL signed by ``ca`` that revokes the certificate ``revoked_pem``."""
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    revoked = x509.load_pem_x509_certificate(revoked_pem)
    now = datetime.datetime.now(datetime.UTC)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(revoked.serial_number)
        .revocation_date(now - datetime.timedelta(minutes=5))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(entry)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def write_pki(folder: Path) -> Pki:
    """A fresh CA, its leaves, a CRL and a stranger CA, written under ``folder``."""
    ca, other = trustme.CA(), trustme.CA()
    paths = {name: folder / f"{name}.pem" for name in Pki.__dataclass_fields__ if name != "folder"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    for kind, key_type in (("rsa", trustme.KeyType.RSA), ("ecdsa", trustme.KeyType.ECDSA)):
        leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=key_type)
        paths[f"{kind}_cert"].write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(paths[f"{kind}_key"]))
    _write_leaf(ca.issue_cert("client@example.com", common_name="client"), paths["client_cert"])
    revoked = ca.issue_cert("revoked@example.com", common_name="revoked")
    _write_leaf(revoked, paths["revoked_cert"])
    _write_leaf(other.issue_cert("stranger@example.com"), paths["stranger_cert"])
    deep = ca.create_child_ca().issue_cert("deep@example.com")
    paths["deep_cert"].write_bytes(deep.cert_chain_pems[0].bytes() + deep.private_key_pem.bytes())
    paths["deep_chain"].write_bytes(deep.cert_chain_pems[1].bytes())
    paths["crl"].write_bytes(revocation_list(ca, revoked.cert_chain_pems[0].bytes()))
    return Pki(folder=folder, **paths)
