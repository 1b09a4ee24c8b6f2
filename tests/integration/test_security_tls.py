"""A TLS session resumes only on a server with the same client-certificate policy.

Two ``server {}`` blocks share a session cache zone and ticket keys but judge client
certificates differently: the *loose* one also trusts another CA (``ssl_trusted_certificate``)
and has no CRL; the *strict* one trusts only the client CA and revokes a certificate
(``ssl_crl``). A resumed session skips certificate verification: the server takes the verify
result stored in the session. So a session made on the loose server and offered to the strict
one must not resume (the CVE-2025-23419 class), whatever carries it: a session ID through the
shared zone (TLS 1.2, or TLS 1.3 with tickets off), or a TLS 1.2 or 1.3 ticket sealed with the
key file or with the keys the zone holds. The strict server then verifies the certificate
itself and refuses it.

Real ``openssl s_client -sess_out`` / ``-sess_in`` chains; the auth server records whether the
gateway ever asked about the user (and with which ``Auth-SSL-Verify``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from mailgate.shm import segment, zones
from tests.servers.auth_http import AuthServer
from tests.support.clients import read_until, s_client_argv, summary
from tests.support.config import mail_block
from tests.support.gateway import Gateway
from tests.support.pki import revocation_list

# mailgate only: nginx 1.22's session ID context covers the certificates and the client CA
# names alone, so it resumes these sessions (the very class of bug this file guards against).
pytestmark = [pytest.mark.slow, pytest.mark.gateway(implementations=("mailgate",))]

GATEWAY_CONFIG = mail_block(
    ssl=True,
    settings=("ssl_verify_client on", "ssl_client_certificate %%CLIENT_CA%%"),
    servers="""
    server {
        listen 127.0.0.1:%%PORT_loose_files%% ssl;
        protocol imap;
        ssl_trusted_certificate %%OTHER_CA%%;
        ssl_session_cache shared:FILES:1m;
        ssl_session_ticket_key %%TICKET_KEY%%;
    }
    server {
        listen 127.0.0.1:%%PORT_strict_files%% ssl;
        protocol imap;
        ssl_crl %%CRL%%;
        ssl_session_cache shared:FILES:1m;
        ssl_session_ticket_key %%TICKET_KEY%%;
    }
    server {
        listen 127.0.0.1:%%PORT_loose_zone%% ssl;
        protocol imap;
        ssl_trusted_certificate %%OTHER_CA%%;
        ssl_session_cache shared:ZONE:1m;
    }
    server {
        listen 127.0.0.1:%%PORT_strict_zone%% ssl;
        protocol imap;
        ssl_crl %%CRL%%;
        ssl_session_cache shared:ZONE:1m;
    }
    server {
        listen 127.0.0.1:%%PORT_loose_ids%% ssl;
        protocol imap;
        ssl_trusted_certificate %%OTHER_CA%%;
        ssl_session_cache shared:IDS:1m;
        ssl_session_tickets off;
    }
    server {
        listen 127.0.0.1:%%PORT_strict_ids%% ssl;
        protocol imap;
        ssl_crl %%CRL%%;
        ssl_session_cache shared:IDS:1m;
        ssl_session_tickets off;
    }
""",
)

ZONES = ("FILES", "ZONE", "IDS")


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_zones() -> Iterator[None]:
    """The gateway ends its master with SIGKILL, a crash: reclaim the zones it left."""
    yield
    for name in segment.instance_segments(""):
        if name.split(".")[-2] in ZONES:
            zones.remove_orphan(name)


CERT_ERROR = "* BYE SSL certificate error\r\n"
LOGIN = b"a LOGIN alice alice-pw\nb LOGOUT\n"


@dataclass(frozen=True)
class ClientPki:
    client_ca: Path  # ssl_client_certificate of every server
    other_ca: Path  # ssl_trusted_certificate of the loose servers only
    crl: Path  # ssl_crl of the strict servers only
    stranger: Path  # issued by ``other_ca``: good on the loose servers, unknown CA on the strict
    revoked: Path  # issued by ``client_ca`` and listed in ``crl``
    ticket_key: Path


def _write_leaf(leaf: trustme.LeafCert, path: Path) -> Path:
    """Certificate and key in one file, as ``s_client -cert`` takes them."""
    path.write_bytes(leaf.cert_chain_pems[0].bytes() + leaf.private_key_pem.bytes())
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClientPki:
    folder = tmp_path_factory.mktemp("policy-pki")
    client_ca, other_ca = trustme.CA(), trustme.CA()
    revoked = client_ca.issue_cert("revoked@example.com", common_name="revoked")
    pki = ClientPki(
        client_ca=folder / "client-ca.pem",
        other_ca=folder / "other-ca.pem",
        crl=folder / "crl.pem",
        stranger=_write_leaf(other_ca.issue_cert("eve@example.com"), folder / "stranger.pem"),
        revoked=_write_leaf(revoked, folder / "revoked.pem"),
        ticket_key=folder / "ticket.key",
    )
    client_ca.cert_pem.write_to_path(str(pki.client_ca))
    other_ca.cert_pem.write_to_path(str(pki.other_ca))
    pki.crl.write_bytes(revocation_list(client_ca, revoked.cert_chain_pems[0].bytes()))
    pki.ticket_key.write_bytes(os.urandom(80))
    return pki


@pytest.fixture(scope="module")
def gateway_values(pki: ClientPki) -> Mapping[str, str | int]:
    return {
        "CLIENT_CA": str(pki.client_ca),
        "OTHER_CA": str(pki.other_ca),
        "CRL": str(pki.crl),
        "TICKET_KEY": str(pki.ticket_key),
    }


def imap(gateway: Gateway, port: str, *options: str, commands: bytes = b"a LOGOUT\n") -> str:
    """One s_client connection: wait for the server's first line, send ``commands``, read
    until the server closes. Returns s_client's whole output."""
    argv = [*s_client_argv(gateway, port, *options), "-crlf", "-ign_eof"]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        try:
            first = read_until(proc, b"\r\n")  # s_client's own lines end in a bare LF
            rest, _ = proc.communicate(commands, timeout=10)
        finally:
            proc.kill()
    return (first + rest).decode(errors="replace")


# (s_client options, loose server, strict server): what carries the session from one to the other.
CARRIERS = {
    "tls12-id-zone": (("-tls1_2", "-no_ticket"), "loose_files", "strict_files"),
    "tls12-ticket-file": (("-tls1_2",), "loose_files", "strict_files"),
    "tls13-ticket-file": (("-tls1_3",), "loose_files", "strict_files"),
    "tls12-ticket-zone": (("-tls1_2",), "loose_zone", "strict_zone"),
    "tls13-ticket-zone": (("-tls1_3",), "loose_zone", "strict_zone"),
    "tls13-id-zone": (("-tls1_3",), "loose_ids", "strict_ids"),  # tickets off: stateful
}


def session_from_loose(gateway: Gateway, carrier: str, cert: Path, session: Path) -> None:
    """Log ``cert`` on to the loose server of ``carrier``; save the session in ``session``."""
    options, loose, _ = CARRIERS[carrier]
    output = imap(gateway, loose, *options, "-cert", str(cert), "-sess_out", str(session))
    assert "* OK" in output, output
    assert session.stat().st_size > 0


def offer(gateway: Gateway, port: str, carrier: str, cert: Path, session: Path) -> str:
    """Offer the saved ``session`` to ``port`` with ``cert`` at hand, then try to log in."""
    options = (*CARRIERS[carrier][0], "-cert", str(cert), "-sess_in", str(session))
    return imap(gateway, port, *options, commands=LOGIN)


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("refused", ["stranger", "revoked"], ids=["unknown-ca", "revoked"])
def test_certificate_the_strict_server_refuses_is_refused_after_offering_a_loose_session(
    gateway: Gateway,
    auth_server: AuthServer,
    pki: ClientPki,
    tmp_path: Path,
    *,
    carrier: str,
    refused: str,
) -> None:
    cert, session = getattr(pki, refused), tmp_path / "session.pem"
    session_from_loose(gateway, carrier, cert, session)
    output = offer(gateway, CARRIERS[carrier][2], carrier, cert, session)
    verified = [request.get("Auth-SSL-Verify") for request in auth_server.requests]
    assert summary(output).startswith("New,"), (summary(output), verified)
    assert CERT_ERROR in output, output
    assert auth_server.requests == []


@pytest.mark.parametrize("carrier", CARRIERS)
def test_the_loose_session_still_resumes_on_the_loose_server(
    gateway: Gateway, auth_server: AuthServer, pki: ClientPki, tmp_path: Path, carrier: str
) -> None:
    """The control: the sessions above were resumable; the strict server declined them."""
    session = tmp_path / "session.pem"
    session_from_loose(gateway, carrier, pki.stranger, session)
    output = offer(gateway, CARRIERS[carrier][1], carrier, pki.stranger, session)
    assert summary(output).startswith("Reused,"), output
    (request,) = auth_server.wait_for_requests(1)
    assert request.get("Auth-SSL-Verify") == "SUCCESS"


@pytest.mark.parametrize("refused", ["stranger", "revoked"], ids=["unknown-ca", "revoked"])
def test_strict_server_refuses_the_certificate_in_a_full_handshake(
    gateway: Gateway, auth_server: AuthServer, pki: ClientPki, refused: str
) -> None:
    output = imap(gateway, "strict_files", "-cert", str(getattr(pki, refused)), commands=LOGIN)
    assert CERT_ERROR in output, output
    assert auth_server.requests == []
