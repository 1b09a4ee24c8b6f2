"""Several certificate/key pairs on one context, each with its own chain."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from tests.unit.worker.tls.conftest import Connect, server_config


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, ...]]]:
    """An RSA and an ECDSA leaf, each issued by its own intermediate of one root."""
    folder = tmp_path_factory.mktemp("dual")
    root = trustme.CA()
    root.cert_pem.write_to_path(str(folder / "root.pem"))
    certs, keys = [], []
    for kind, key_type in (("rsa", trustme.KeyType.RSA), ("ecdsa", trustme.KeyType.ECDSA)):
        leaf = root.create_child_ca().issue_cert("localhost", key_type=key_type)
        cert, key = folder / f"{kind}.pem", folder / f"{kind}.key"
        cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))  # leaf, then CA
        leaf.private_key_pem.write_to_path(str(key))
        certs.append(str(cert))
        keys.append(str(key))
    return folder / "root.pem", {
        "ssl_certificate": tuple(certs),
        "ssl_certificate_key": tuple(keys),
    }


@pytest.mark.parametrize(
    ("sigalgs", "key"),
    [("ECDSA+SHA256", "_EllipticCurvePublicKey"), ("RSA-PSS+SHA256", "_RSAPublicKey")],
)
def test_signature_algorithms_choose_the_certificate_and_its_own_chain(
    dual: tuple[Path, dict[str, tuple[str, ...]]], connect: Connect, sigalgs: str, key: str
) -> None:
    root, pairs = dual
    output, seen = connect(
        server_config(**pairs), "-sigalgs", sigalgs, "-CAfile", str(root), "-verify_return_error"
    )
    assert seen.cert_key == key
    # The chain verifies only if the intermediate sent is the one that issued this leaf.
    assert "Verify return code: 0 (ok)" in output


def test_tls12_rsa_only_client_gets_the_rsa_certificate(
    dual: tuple[Path, dict[str, tuple[str, ...]]], connect: Connect
) -> None:
    root, pairs = dual
    output, seen = connect(
        server_config(**pairs),
        "-tls1_2",
        "-cipher",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "-CAfile",
        str(root),
        "-verify_return_error",
    )
    assert seen.cert_key == "_RSAPublicKey"
    assert "Verify return code: 0 (ok)" in output
