"""Client certificates: ``ssl_verify_client``, ``ssl_client_certificate``, ``ssl_verify_depth``.

The handshake always completes; the gateway then judges the certificate and, when it must
refuse, says why in the client's own protocol (nginx's ``cert_error`` / ``no_cert`` lines) and
closes. A certificate it accepts is described to the auth server in the ``Auth-SSL-*`` headers
(and passed whole with ``auth_http_pass_client_cert on``). The CAs and certificates are made
here with trustme.

Every test runs on nginx and on mailgate.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.servers.auth_http import AuthRequest, AuthServer
from tests.support.clients import LineClient
from tests.support.config import mail_block
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    ssl=True,
    settings=("ssl_client_certificate %%CLIENT_CA%%",),
    servers="""
    server {
        listen 127.0.0.1:%%PORT_imaps%% ssl;
        protocol imap;
        ssl_verify_client on;
        auth_http_pass_client_cert on;
    }
    server { listen 127.0.0.1:%%PORT_pop3s%% ssl; protocol pop3; ssl_verify_client on; }
    server { listen 127.0.0.1:%%PORT_smtps%% ssl; protocol smtp; ssl_verify_client on; }
    server {
        listen 127.0.0.1:%%PORT_imap%%;
        protocol imap;
        starttls on;
        ssl_verify_client on;
    }
    server { listen 127.0.0.1:%%PORT_optional%% ssl; protocol imap; ssl_verify_client optional; }
    server {
        listen 127.0.0.1:%%PORT_no_ca%% ssl;
        protocol imap;
        ssl_verify_client optional_no_ca;
    }
    server {
        listen 127.0.0.1:%%PORT_depth1%% ssl;
        protocol imap;
        ssl_verify_client on;
        ssl_client_certificate %%CHAIN_CA%%;
        ssl_verify_depth 1;
    }
    server {
        listen 127.0.0.1:%%PORT_depth0%% ssl;
        protocol imap;
        ssl_verify_client on;
        ssl_client_certificate %%CHAIN_CA%%;
        ssl_verify_depth 0;
    }
""",
)

GREETINGS = {
    "imap": b"* OK IMAP4 ready\r\n",
    "pop3": b"+OK POP3 ready",  # followed by the APOP salt on some servers; a prefix here
    "smtp": b"220 localhost ESMTP ready\r\n",
}
NO_CERT = {
    "imaps": b"* BYE No required SSL certificate\r\n",
    "pop3s": b"-ERR No required SSL certificate\r\n",
    "smtps": b"421 4.7.1 No required SSL certificate\r\n",
}
CERT_ERROR = {
    "imaps": b"* BYE SSL certificate error\r\n",
    "pop3s": b"-ERR SSL certificate error\r\n",
    "smtps": b"421 4.7.1 SSL certificate error\r\n",
}
# A leaf alone from an unknown CA (OpenSSL 3); a chain cut short by the depth limit.
UNKNOWN_ISSUER = "21:unable to verify the first certificate"
CUT_SHORT = "20:unable to get local issuer certificate"


@dataclass(frozen=True)
class ClientCert:
    """A client certificate file (leaf first, then any intermediates) and its key."""

    chain: Path
    key: Path

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.chain.read_bytes())


@dataclass(frozen=True)
class ClientPki:
    ca: Path  # ssl_client_certificate of most servers
    good: ClientCert  # issued by ``ca``
    stranger: ClientCert  # issued by a CA nobody trusts
    chain_ca: Path  # a root whose leaves hang below an intermediate
    chained: ClientCert  # leaf + intermediate, under ``chain_ca``
    expired: ClientCert  # issued by ``ca``, valid until yesterday


def _write(folder: Path, name: str, leaf: trustme.LeafCert) -> ClientCert:
    cert = ClientCert(folder / f"{name}.crt", folder / f"{name}.key")
    cert.chain.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(cert.key))
    return cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClientPki:
    folder = tmp_path_factory.mktemp("client-pki")
    names = {"organization_name": "MailgateTests", "organization_unit_name": "Users"}
    ca = trustme.CA(organization_name="MailgateTests", organization_unit_name="ClientCA")
    other = trustme.CA(organization_name="Elsewhere", organization_unit_name="OtherCA")
    root = trustme.CA(organization_name="MailgateTests", organization_unit_name="Root")
    intermediate = root.create_child_ca()
    ca.cert_pem.write_to_path(str(folder / "client-ca.crt"))
    root.cert_pem.write_to_path(str(folder / "chain-ca.crt"))
    return ClientPki(
        ca=folder / "client-ca.crt",
        good=_write(folder, "good", ca.issue_cert("alice.test", common_name="alice", **names)),
        stranger=_write(folder, "stranger", other.issue_cert("eve.test", common_name="eve")),
        chain_ca=folder / "chain-ca.crt",
        chained=_write(folder, "chained", intermediate.issue_cert("bob.test", common_name="bob")),
        expired=_write(
            folder,
            "expired",
            ca.issue_cert(
                "old.test",
                common_name="old",
                not_before=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2),
                not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1),
            ),
        ),
    )


@pytest.fixture(scope="module")
def gateway_values(pki: ClientPki) -> Mapping[str, str | int]:
    return {"CLIENT_CA": str(pki.ca), "CHAIN_CA": str(pki.chain_ca)}


def tls_client(gateway: Gateway, cert: ClientCert | None) -> ssl.SSLContext:
    context = gateway.tls()
    if cert is not None:
        context.load_cert_chain(cert.chain, cert.key)
    return context


def connect(gateway: Gateway, name: str, cert: ClientCert | None) -> LineClient:
    """Implicit TLS on port ``name``, presenting ``cert`` (or no certificate)."""
    return LineClient(gateway.port(name), tls=tls_client(gateway, cert))


def imap_login(client: LineClient) -> bytes:
    assert client.line() == GREETINGS["imap"]
    return client.ask(b"a LOGIN alice alice-pw", lambda line: line[:2] == b"a ")


def only_request(auth_server: AuthServer) -> AuthRequest:
    (request,) = auth_server.wait_for_requests(1)
    return request


def rfc2253(name: x509.Name) -> str:
    return name.rfc4514_string()  # the same text for these plain ASCII names


def escaped_pem(cert: x509.Certificate) -> str:
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return pem.replace(" ", "%20").replace("\n", "%0A")


def cert_lines(cert: x509.Certificate) -> list[str]:
    der = cert.public_bytes(serialization.Encoding.DER)
    serial = f"{cert.serial_number:X}"
    return [
        f"Auth-SSL-Subject: {rfc2253(cert.subject)}",
        f"Auth-SSL-Issuer: {rfc2253(cert.issuer)}",
        f"Auth-SSL-Serial: {serial.zfill(len(serial) + len(serial) % 2)}",
        f"Auth-SSL-Fingerprint: {hashlib.sha1(der).hexdigest()}",
    ]


def tls_lines(request: AuthRequest) -> list[str]:
    """The request's lines from ``Auth-SSL-Verify`` on."""
    lines = list(request.lines)
    return lines[lines.index("Auth-SSL-Protocol: TLSv1.3") + 2 :]


# --- ssl_verify_client on ----------------------------------------------------------------------


def test_good_certificate_logs_in_and_is_described_to_the_auth_server(
    gateway: Gateway, auth_server: AuthServer, pki: ClientPki
) -> None:
    with connect(gateway, "imaps", pki.good) as client:
        assert imap_login(client).startswith(b"a OK ")
    leaf = pki.good.leaf
    assert tls_lines(only_request(auth_server)) == [
        "Auth-SSL-Verify: SUCCESS",
        *cert_lines(leaf),
        f"Auth-SSL-Cert: {escaped_pem(leaf)}",
    ]


def test_good_certificate_over_starttls_with_s_client(
    gateway: Gateway, auth_server: AuthServer, pki: ClientPki
) -> None:
    argv = [
        "openssl",
        "s_client",
        "-starttls",
        "imap",
        "-connect",
        f"127.0.0.1:{gateway.port('imap')}",
    ]
    argv += ["-CAfile", str(gateway.ca), "-verify_return_error", "-crlf", "-quiet", "-ign_eof"]
    argv += ["-cert", str(pki.good.chain), "-key", str(pki.good.key)]
    commands = b"a LOGIN alice alice-pw\nb LOGOUT\n"
    result = subprocess.run(argv, input=commands, capture_output=True, timeout=20, check=False)
    assert b"\na OK " in b"\n" + result.stdout, result.stdout + result.stderr
    assert tls_lines(only_request(auth_server)) == [
        "Auth-SSL-Verify: SUCCESS",
        *cert_lines(pki.good.leaf),
    ]


@pytest.mark.parametrize("name", ["imaps", "pop3s", "smtps"])
def test_missing_certificate_is_refused_in_the_protocol_and_closed(
    gateway: Gateway, auth_server: AuthServer, name: str
) -> None:
    with connect(gateway, name, None) as client:
        assert client.line() == NO_CERT[name]
        assert client.at_eof()
    assert gateway.wait_for_log("client sent no required SSL certificate")
    assert auth_server.requests == []


def test_missing_certificate_after_starttls_is_refused_and_closed(gateway: Gateway) -> None:
    with gateway.connect("imap") as client:
        assert client.line() == GREETINGS["imap"]
        assert client.ask(b"a STARTTLS") == b"a OK completed\r\n"
        client.starttls(gateway.tls())
        assert client.line() == NO_CERT["imaps"]
        assert client.at_eof()


@pytest.mark.parametrize("name", ["imaps", "pop3s", "smtps"])
def test_certificate_from_another_ca_is_a_certificate_error(
    gateway: Gateway, auth_server: AuthServer, pki: ClientPki, name: str
) -> None:
    with connect(gateway, name, pki.stranger) as client:
        assert client.line() == CERT_ERROR[name]
        assert client.at_eof()
    assert gateway.wait_for_log(f"client SSL certificate verify error: ({UNKNOWN_ISSUER})")
    assert auth_server.requests == []


def test_expired_certificate_is_a_certificate_error(
    gateway: Gateway, auth_server: AuthServer, pki: ClientPki
) -> None:
    with connect(gateway, "imaps", pki.expired) as client:
        assert client.line() == CERT_ERROR["imaps"]
        assert client.at_eof()
    assert gateway.wait_for_log("client SSL certificate verify error: (10:certificate has expired)")
    assert auth_server.requests == []


# --- optional, optional_no_ca ------------------------------------------------------------------


def test_optional_without_a_certificate_logs_in_with_verify_none(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with connect(gateway, "optional", None) as client:
        assert imap_login(client).startswith(b"a OK ")
    assert tls_lines(only_request(auth_server)) == ["Auth-SSL-Verify: NONE"]


def test_optional_with_a_certificate_from_another_ca_is_a_certificate_error(
    gateway: Gateway, pki: ClientPki
) -> None:
    with connect(gateway, "optional", pki.stranger) as client:
        assert client.line() == CERT_ERROR["imaps"]
        assert client.at_eof()


def test_optional_no_ca_accepts_an_unknown_issuer_and_reports_the_failure(
    gateway: Gateway, auth_server: AuthServer, pki: ClientPki
) -> None:
    with connect(gateway, "no_ca", pki.stranger) as client:
        assert imap_login(client).startswith(b"a OK ")
    assert tls_lines(only_request(auth_server)) == [
        f"Auth-SSL-Verify: FAILED:{UNKNOWN_ISSUER.split(':', 1)[1]}",
        *cert_lines(pki.stranger.leaf),
    ]


# --- ssl_verify_depth ----------------------------------------------------------------------------


def test_chain_with_one_intermediate_is_within_verify_depth_1(
    gateway: Gateway, auth_server: AuthServer, pki: ClientPki
) -> None:
    with connect(gateway, "depth1", pki.chained) as client:
        assert imap_login(client).startswith(b"a OK ")
    assert tls_lines(only_request(auth_server))[0] == "Auth-SSL-Verify: SUCCESS"


def test_chain_with_one_intermediate_is_too_deep_for_verify_depth_0(
    gateway: Gateway, pki: ClientPki
) -> None:
    with connect(gateway, "depth0", pki.chained) as client:
        assert client.line() == CERT_ERROR["imaps"]
        assert client.at_eof()
    assert gateway.wait_for_log(f"client SSL certificate verify error: ({CUT_SHORT})")
