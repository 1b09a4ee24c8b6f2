"""The TLS directives of ngx_mail_ssl_module, end to end through real clients.

One gateway (module-scoped, on nginx and on mailgate) holds a server block per setting, each on
its own port; ``openssl s_client`` (implicit TLS and ``-starttls imap|pop3|smtp``), ``curl`` and
Python's ``ssl`` then check what a client can and cannot negotiate:

- ``ssl_protocols``: the enabled version works, a client forcing the other one fails;
- ``ssl_ciphers`` (TLS 1.2), ``ssl_prefer_server_ciphers``, and ``ssl_conf_command Ciphersuites``
  (TLS 1.3);
- two certificate/key pairs (RSA and ECDSA, each under its own CA and intermediate): the client's
  signature algorithms or cipher choose the leaf, and each chain verifies against its CA;
- ``ssl_dhparam`` (no DHE without it, nginx since 1.11.0) and ``ssl_ecdh_curve``;
- ``ssl_password_file`` with a passphrase-protected key, and ``mailgate -t`` on broken keys;
- ``starttls only``: no authentication before the handshake, as nginx replies.

Both implementations link the same OpenSSL 3.0, so a refused handshake ends with the same alert
on the client's side. Tests run on nginx and on mailgate unless they say why not.
"""

from __future__ import annotations

import base64
import os
import re
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.servers import nginx
from tests.servers.auth_http import AuthServer
from tests.servers.files import NOBODY_UID, NOGROUP_GID, reachable_dir
from tests.support.clients import LineClient, run_curl, run_s_client
from tests.support.config import mail_block
from tests.support.gateway import IMPLEMENTATIONS, Gateway, running_gateway
from tests.support.master import MAILGATE

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    ssl=True,
    servers="""
    # ssl_protocols, on the shared (ECDSA) certificate
    server { listen 127.0.0.1:%%PORT_tls12%% ssl; protocol imap; ssl_protocols TLSv1.2; }
    server { listen 127.0.0.1:%%PORT_tls13%% ssl; protocol imap; ssl_protocols TLSv1.3; }
    server {
        listen 127.0.0.1:%%PORT_pop3_tls12%%;
        protocol pop3;
        starttls on;
        ssl_protocols TLSv1.2;
    }
    server {
        listen 127.0.0.1:%%PORT_smtp_tls13%%;
        protocol smtp;
        starttls on;
        ssl_protocols TLSv1.3;
    }

    # ssl_ciphers and ssl_prefer_server_ciphers: TLS 1.2 with the ECDHE-RSA suites
    server {
        listen 127.0.0.1:%%PORT_server_order%% ssl;
        protocol imap;
        ssl_certificate %%RSA_CERT%%;
        ssl_certificate_key %%RSA_KEY%%;
        ssl_protocols TLSv1.2;
        ssl_ciphers ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256;
        ssl_prefer_server_ciphers on;
    }
    server {
        listen 127.0.0.1:%%PORT_client_order%% ssl;
        protocol imap;
        ssl_certificate %%RSA_CERT%%;
        ssl_certificate_key %%RSA_KEY%%;
        ssl_protocols TLSv1.2;
        ssl_ciphers ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256;
    }
    # ssl_conf_command: the only TLS 1.3 suite
    server {
        listen 127.0.0.1:%%PORT_chacha%% ssl;
        protocol imap;
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites TLS_CHACHA20_POLY1305_SHA256;
    }

    # Two certificate/key pairs on one server
    server {
        listen 127.0.0.1:%%PORT_dual%% ssl;
        protocol imap;
        ssl_certificate %%RSA_CERT%%;
        ssl_certificate_key %%RSA_KEY%%;
        ssl_certificate %%ECDSA_CERT%%;
        ssl_certificate_key %%ECDSA_KEY%%;
    }

    # ssl_dhparam
    server {
        listen 127.0.0.1:%%PORT_dhe%% ssl;
        protocol imap;
        ssl_certificate %%RSA_CERT%%;
        ssl_certificate_key %%RSA_KEY%%;
        ssl_protocols TLSv1.2;
        ssl_dhparam %%DHPARAM%%;
    }
    server {
        listen 127.0.0.1:%%PORT_no_dhparam%% ssl;
        protocol imap;
        ssl_certificate %%RSA_CERT%%;
        ssl_certificate_key %%RSA_KEY%%;
        ssl_protocols TLSv1.2;
    }

    # ssl_ecdh_curve
    server {
        listen 127.0.0.1:%%PORT_x25519%% ssl;
        protocol imap;
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve X25519;
    }
    server {
        listen 127.0.0.1:%%PORT_nist%% ssl;
        protocol imap;
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve prime256v1:secp384r1;
    }

    # ssl_password_file: the key's passphrase is on the file's second line
    server {
        listen 127.0.0.1:%%PORT_encrypted%% ssl;
        protocol imap;
        ssl_certificate %%RSA_CERT%%;
        ssl_certificate_key %%ENCRYPTED_KEY%%;
        ssl_password_file %%PASSWORDS%%;
    }

    # starttls only
    server { listen 127.0.0.1:%%PORT_imap_only%%; protocol imap; starttls only; }
    server { listen 127.0.0.1:%%PORT_pop3_only%%; protocol pop3; starttls only; }
    server { listen 127.0.0.1:%%PORT_smtp_only%%; protocol smtp; starttls only; }
""",
)

IMAP_GREETING = b"* OK IMAP4 ready\r\n"
POP3_GREETING = b"+OK POP3 ready\r\n"
SMTP_GREETING = b"220 localhost ESMTP ready\r\n"
PASSPHRASE = "the-second-line"

# What s_client reports when the server refuses the handshake (both link OpenSSL 3.0).
PROTOCOL_VERSION_ALERT = "tlsv1 alert protocol version"
HANDSHAKE_FAILURE_ALERT = "sslv3 alert handshake failure"


# --- certificates, keys and parameters made for this module -------------------------------------


@dataclass(frozen=True)
class Pki:
    """Two CAs, each with an intermediate and a localhost leaf (RSA under one, ECDSA under the
    other); the certificate files hold leaf then intermediate. Plus the RSA key encrypted with
    ``PASSPHRASE``, a password file whose second line is that passphrase, and DH parameters."""

    rsa_ca: Path
    rsa_cert: Path
    rsa_key: Path
    ecdsa_ca: Path
    ecdsa_cert: Path
    ecdsa_key: Path
    encrypted_key: Path
    passwords: Path
    dhparam: Path


def _chain(folder: Path, name: str, key_type: trustme.KeyType) -> tuple[Path, Path, Path]:
    root = trustme.CA(organization_name=f"Mailgate {name} root", key_type=key_type)
    leaf = root.create_child_ca(key_type=key_type).issue_cert(
        "localhost", "127.0.0.1", key_type=key_type
    )
    ca, cert, key = folder / f"{name}-ca.pem", folder / f"{name}.pem", folder / f"{name}.key"
    root.cert_pem.write_to_path(str(ca))
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return ca, cert, key


def _encrypted_copy(key: Path, target: Path, passphrase: str) -> Path:
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    target.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        )
    )
    return target


def _ffdhe2048(target: Path) -> Path:
    """RFC 7919's ffdhe2048 group: instant, and strong enough for OpenSSL 3's security level."""
    argv = ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048"]
    subprocess.run([*argv, "-out", str(target)], check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("tls-directives")
    rsa_ca, rsa_cert, rsa_key = _chain(folder, "rsa", trustme.KeyType.RSA)
    ecdsa_ca, ecdsa_cert, ecdsa_key = _chain(folder, "ecdsa", trustme.KeyType.ECDSA)
    passwords = folder / "passwords"
    passwords.write_text(f"not-this-one\n{PASSPHRASE}\n")
    return Pki(
        rsa_ca=rsa_ca,
        rsa_cert=rsa_cert,
        rsa_key=rsa_key,
        ecdsa_ca=ecdsa_ca,
        ecdsa_cert=ecdsa_cert,
        ecdsa_key=ecdsa_key,
        encrypted_key=_encrypted_copy(rsa_key, folder / "encrypted.key", PASSPHRASE),
        passwords=passwords,
        dhparam=_ffdhe2048(folder / "dhparam.pem"),
    )


@pytest.fixture(scope="module")
def gateway_values(pki: Pki) -> Mapping[str, str | int]:
    return {
        "RSA_CERT": str(pki.rsa_cert),
        "RSA_KEY": str(pki.rsa_key),
        "ECDSA_CERT": str(pki.ecdsa_cert),
        "ECDSA_KEY": str(pki.ecdsa_key),
        "ENCRYPTED_KEY": str(pki.encrypted_key),
        "PASSWORDS": str(pki.passwords),
        "DHPARAM": str(pki.dhparam),
    }


# --- clients ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """One ``openssl s_client`` run: its exit status and everything it printed."""

    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "Verify return code: 0 (ok)" in self.output

    def summary(self) -> tuple[str, str]:
        """Protocol and cipher from s_client's ``New, TLSv1.3, Cipher is ...`` line.

        (The ``SSL-Session:`` block with ``Protocol  :`` comes with a TLS 1.3 session ticket,
        after the handshake; this line is printed as soon as the handshake completes.)
        """
        found = re.search(r"^New, (TLSv1\.\d), Cipher is (\S+)$", self.output, re.MULTILINE)
        assert found, self.output
        return found.group(1), found.group(2)

    def protocol(self) -> str:
        """The negotiated version; the ``Protocol  :`` line, when printed, must agree."""
        protocol = self.summary()[0]
        for line in re.findall(r"^\s+Protocol\s+: (\S+)$", self.output, re.MULTILINE):
            assert line == protocol, self.output
        return protocol

    def cipher(self) -> str:
        return self.summary()[1]

    def temp_key(self) -> str:
        """The key exchange, e.g. ``X25519, 253 bits`` or ``DH, 2048 bits``."""
        found = re.search(r"^Server Temp Key: (.*)$", self.output, re.MULTILINE)
        assert found, self.output
        return found.group(1).strip()

    def leaf(self) -> x509.Certificate:
        """The server certificate s_client printed."""
        found = re.search(
            r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", self.output, re.DOTALL
        )
        assert found, self.output
        return x509.load_pem_x509_certificate(found.group(0).encode())


def s_client(
    gateway: Gateway, port: str, *options: str, ca: Path | None = None, starttls: str = ""
) -> Handshake:
    """Handshake with ``port`` (after ``-starttls`` when given), verifying against ``ca``.

    stdin is empty, so s_client prints its summary and ends the connection right away.
    """
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{gateway.port(port)}"]
    argv += ["-servername", "localhost", "-CAfile", str(ca or gateway.ca), "-verify_return_error"]
    if starttls:
        argv += ["-starttls", starttls]
    result = subprocess.run(
        [*argv, *options],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return Handshake(result.returncode, result.stdout + result.stderr)


def refused(handshake: Handshake, alert: str) -> bool:
    """The handshake failed with ``alert`` and no session was set up."""
    return handshake.returncode != 0 and alert in handshake.output and not handshake.ok


def python_client(
    ca: Path,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def curl(gateway: Gateway, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``curl URL`` as ``run_curl`` runs it, returning the result whatever the exit status."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(gateway.ca), *args, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


CURL_SSL_CONNECT_ERROR = 35


# --- ssl_protocols -------------------------------------------------------------------------------

TLS12_ONLY = [pytest.param("tls12", "", id="imaps"), pytest.param("pop3_tls12", "pop3", id="stls")]
TLS13_ONLY = [
    pytest.param("tls13", "", id="imaps"),
    pytest.param("smtp_tls13", "smtp", id="smtp-starttls"),
]


@pytest.mark.parametrize(("port", "starttls"), TLS12_ONLY)
def test_tls12_only_server_negotiates_tls12(gateway: Gateway, port: str, starttls: str) -> None:
    handshake = s_client(gateway, port, "-tls1_2", starttls=starttls)
    assert handshake.ok, handshake.output
    assert handshake.protocol() == "TLSv1.2"


@pytest.mark.parametrize(("port", "starttls"), TLS12_ONLY)
def test_tls12_only_server_refuses_a_tls13_client(
    gateway: Gateway, port: str, starttls: str
) -> None:
    handshake = s_client(gateway, port, "-tls1_3", starttls=starttls)
    assert refused(handshake, PROTOCOL_VERSION_ALERT), handshake.output


@pytest.mark.parametrize(("port", "starttls"), TLS13_ONLY)
def test_tls13_only_server_negotiates_tls13(gateway: Gateway, port: str, starttls: str) -> None:
    handshake = s_client(gateway, port, "-tls1_3", starttls=starttls)
    assert handshake.ok, handshake.output
    assert handshake.protocol() == "TLSv1.3"


@pytest.mark.parametrize(("port", "starttls"), TLS13_ONLY)
def test_tls13_only_server_refuses_a_tls12_client(
    gateway: Gateway, port: str, starttls: str
) -> None:
    handshake = s_client(gateway, port, "-tls1_2", starttls=starttls)
    assert refused(handshake, PROTOCOL_VERSION_ALERT), handshake.output


def test_python_client_capped_at_tls12_is_greeted_by_the_tls12_only_server(
    gateway: Gateway,
) -> None:
    context = python_client(gateway.ca, maximum=ssl.TLSVersion.TLSv1_2)
    with LineClient(gateway.port("tls12"), tls=context) as client:
        assert client.line() == IMAP_GREETING
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() == "TLSv1.2"


def test_python_client_requiring_tls13_cannot_reach_the_tls12_only_server(
    gateway: Gateway,
) -> None:
    context = python_client(gateway.ca, minimum=ssl.TLSVersion.TLSv1_3)
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        LineClient(gateway.port("tls12"), tls=context)


def test_curl_requiring_tls13_lists_mailboxes_on_the_tls13_only_server(gateway: Gateway) -> None:
    url = f"imaps://localhost:{gateway.port('tls13')}/"
    listing = run_curl(gateway, url, "-u", "alice:alice-pw", "--tlsv1.3")
    assert "INBOX" in listing


def test_curl_capped_at_tls12_cannot_reach_the_tls13_only_server(gateway: Gateway) -> None:
    url = f"imaps://localhost:{gateway.port('tls13')}/"
    result = curl(gateway, url, "-u", "alice:alice-pw", "--tls-max", "1.2")
    assert result.returncode == CURL_SSL_CONNECT_ERROR, result.stderr


# --- ssl_ciphers, ssl_prefer_server_ciphers, ssl_conf_command Ciphersuites ----------------------

BOTH_LISTED_CLIENT_ORDER = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"


def test_tls12_client_offering_only_an_unlisted_cipher_is_refused(
    gateway: Gateway, pki: Pki
) -> None:
    handshake = s_client(
        gateway, "server_order", "-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305", ca=pki.rsa_ca
    )
    assert refused(handshake, HANDSHAKE_FAILURE_ALERT), handshake.output


def test_tls12_client_offering_one_listed_cipher_gets_it(gateway: Gateway, pki: Pki) -> None:
    handshake = s_client(
        gateway, "server_order", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", ca=pki.rsa_ca
    )
    assert handshake.ok, handshake.output
    assert handshake.cipher() == "ECDHE-RSA-AES128-GCM-SHA256"


def test_prefer_server_ciphers_on_picks_the_servers_first_choice(
    gateway: Gateway, pki: Pki
) -> None:
    handshake = s_client(
        gateway, "server_order", "-tls1_2", "-cipher", BOTH_LISTED_CLIENT_ORDER, ca=pki.rsa_ca
    )
    assert handshake.ok, handshake.output
    assert handshake.cipher() == "ECDHE-RSA-AES256-GCM-SHA384"


def test_prefer_server_ciphers_off_picks_the_clients_first_choice(
    gateway: Gateway, pki: Pki
) -> None:
    handshake = s_client(
        gateway, "client_order", "-tls1_2", "-cipher", BOTH_LISTED_CLIENT_ORDER, ca=pki.rsa_ca
    )
    assert handshake.ok, handshake.output
    assert handshake.cipher() == "ECDHE-RSA-AES128-GCM-SHA256"


def test_conf_command_ciphersuites_is_the_tls13_suite_a_default_client_gets(
    gateway: Gateway,
) -> None:
    with LineClient(gateway.port("chacha"), tls=gateway.tls()) as client:
        assert client.line() == IMAP_GREETING
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.cipher() == ("TLS_CHACHA20_POLY1305_SHA256", "TLSv1.3", 256)


def test_conf_command_ciphersuites_refuses_a_tls13_client_without_that_suite(
    gateway: Gateway,
) -> None:
    suites = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
    handshake = s_client(gateway, "chacha", "-tls1_3", "-ciphersuites", suites)
    assert refused(handshake, HANDSHAKE_FAILURE_ALERT), handshake.output


# --- two certificate/key pairs: RSA and ECDSA ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key_type", "kind"),
    [
        pytest.param(
            ("-tls1_3", "-sigalgs", "ECDSA+SHA256"),
            ec.EllipticCurvePublicKey,
            "ecdsa",
            id="tls13-ecdsa-sigalgs",
        ),
        pytest.param(
            ("-tls1_3", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"),
            rsa.RSAPublicKey,
            "rsa",
            id="tls13-rsa-sigalgs",
        ),
        pytest.param(
            ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"),
            ec.EllipticCurvePublicKey,
            "ecdsa",
            id="tls12-ecdsa-cipher",
        ),
        pytest.param(
            ("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"),
            rsa.RSAPublicKey,
            "rsa",
            id="tls12-rsa-cipher",
        ),
    ],
)
def test_client_capabilities_choose_the_certificate_and_its_chain_verifies(
    gateway: Gateway, pki: Pki, options: tuple[str, ...], key_type: type, kind: str
) -> None:
    ca = pki.rsa_ca if kind == "rsa" else pki.ecdsa_ca
    handshake = s_client(gateway, "dual", *options, ca=ca)
    # Verifies only if the intermediate sent is the one that issued this leaf.
    assert handshake.ok, handshake.output
    assert isinstance(handshake.leaf().public_key(), key_type)


# --- ssl_dhparam ---------------------------------------------------------------------------------

DHE_ONLY = ("-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256")


def test_dhparam_lets_a_dhe_only_tls12_client_in(gateway: Gateway, pki: Pki) -> None:
    handshake = s_client(gateway, "dhe", *DHE_ONLY, ca=pki.rsa_ca)
    assert handshake.ok, handshake.output
    assert handshake.cipher() == "DHE-RSA-AES128-GCM-SHA256"
    assert handshake.temp_key() == "DH, 2048 bits"


def test_without_dhparam_a_dhe_only_tls12_client_is_refused(gateway: Gateway, pki: Pki) -> None:
    handshake = s_client(gateway, "no_dhparam", *DHE_ONLY, ca=pki.rsa_ca)
    assert refused(handshake, HANDSHAKE_FAILURE_ALERT), handshake.output


# --- ssl_ecdh_curve ------------------------------------------------------------------------------


def test_curve_x25519_accepts_an_x25519_client(gateway: Gateway) -> None:
    handshake = s_client(gateway, "x25519", "-tls1_3", "-groups", "X25519")
    assert handshake.ok, handshake.output
    assert handshake.temp_key() == "X25519, 253 bits"


def test_curve_x25519_refuses_a_p256_only_client(gateway: Gateway) -> None:
    handshake = s_client(gateway, "x25519", "-tls1_3", "-groups", "P-256")
    assert refused(handshake, HANDSHAKE_FAILURE_ALERT), handshake.output


def test_curve_list_accepts_its_second_curve(gateway: Gateway) -> None:
    handshake = s_client(gateway, "nist", "-tls1_3", "-groups", "secp384r1")
    assert handshake.ok, handshake.output
    assert handshake.temp_key() == "ECDH, secp384r1, 384 bits"


def test_curve_list_moves_a_default_client_to_p256(gateway: Gateway) -> None:
    # s_client's default key share is X25519 alone; the server asks again for prime256v1.
    handshake = s_client(gateway, "nist", "-tls1_3")
    assert handshake.ok, handshake.output
    assert handshake.temp_key() == "ECDH, prime256v1, 256 bits"


def test_curve_list_refuses_an_x25519_only_client(gateway: Gateway) -> None:
    handshake = s_client(gateway, "nist", "-tls1_3", "-groups", "X25519")
    assert refused(handshake, HANDSHAKE_FAILURE_ALERT), handshake.output


# --- ssl_password_file ---------------------------------------------------------------------------


def test_key_unlocked_by_the_password_files_second_line_serves(gateway: Gateway, pki: Pki) -> None:
    with LineClient(gateway.port("encrypted"), tls=python_client(pki.rsa_ca)) as client:
        assert client.line() == IMAP_GREETING


PASSWORD_FILE_FOR_ALL = """
mail {
    auth_http %%AUTH_HTTP%%;
    ssl_password_file %%PASSWORDS%%;

    server {
        listen 127.0.0.1:%%PORT_imaps%% ssl;
        protocol imap;
        ssl_certificate %%RSA_CERT%%;
        ssl_certificate_key %%RSA_KEY%%;
    }
}
"""


# Its own gateway: if this key is refused, the server cannot start, and the module's gateway
# (with every other test) should not go down with it.
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_unencrypted_key_serves_under_a_password_file(
    implementation: str, tmp_path: Path, pki: Pki, auth_server: AuthServer
) -> None:
    """A password file set for the whole ``mail {}`` block is simply not needed by a key
    without a passphrase (OpenSSL asks for a password only to decrypt)."""
    if implementation == "nginx" and (why := nginx.missing()) is not None:
        # make test installs nginx: without it the wire comparison would silently shrink.
        pytest.fail(why)
    values = {
        "AUTH_HTTP": auth_server.url,
        "PASSWORDS": str(pki.passwords),
        "RSA_CERT": str(pki.rsa_cert),
        "RSA_KEY": str(pki.rsa_key),
    }
    with (
        running_gateway(implementation, PASSWORD_FILE_FOR_ALL, tmp_path, values, pki.rsa_ca) as gw,
        LineClient(gw.port("imaps"), tls=gw.tls()) as client,
    ):
        assert client.line() == IMAP_GREETING


# --- mailgate -t on broken keys ------------------------------------------------------------------
# mailgate only: nginx -t fails too, but prints OpenSSL's own error strings, which mailgate words
# differently (it loads keys through Python's cryptography); what both share is exit status 1
# and the name of the file at fault, which is what these tests check.


@dataclass(frozen=True)
class BrokenKey:
    key: Path
    runs_as: int | None = None  # a uid to run ``mailgate -t`` as
    needs_passwords: bool = False  # ``ssl_password_file`` only where a passphrase is expected


def _broken_key(case: str, folder: Path, pki: Pki) -> BrokenKey:
    key = folder / f"{case}.key"
    if case == "wrong-password":
        _encrypted_copy(pki.rsa_key, key, "not-in-the-password-file")
        return BrokenKey(key, needs_passwords=True)
    elif case == "unreadable":
        key.write_bytes(pki.rsa_key.read_bytes())
        key.chmod(0o000)
        # root reads any file: run as nobody, who can read everything else in the folder
        return BrokenKey(key, NOBODY_UID if os.geteuid() == 0 else None)
    elif case == "bad-pem":
        key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    elif case == "mismatched":
        key.write_bytes(pki.ecdsa_key.read_bytes())
    return BrokenKey(key)


@pytest.mark.parametrize("case", ["wrong-password", "unreadable", "bad-pem", "mismatched"])
def test_mailgate_t_fails_naming_a_broken_key(tmp_path: Path, pki: Pki, case: str) -> None:
    with reachable_dir(tmp_path, "conf") as folder:
        cert, passwords = folder / "rsa.pem", folder / "passwords"
        cert.write_bytes(pki.rsa_cert.read_bytes())
        passwords.write_bytes(pki.passwords.read_bytes())
        broken = _broken_key(case, folder, pki)
        password_file = f"ssl_password_file {passwords};" if broken.needs_passwords else ""
        conf = folder / "mailgate.conf"
        conf.write_text(
            "mail {\n    server {\n        listen 127.0.0.1:993 ssl;\n"
            "        protocol imap;\n        proxy_pass 127.0.0.1:143;\n"
            f"        ssl_certificate {cert};\n        ssl_certificate_key {broken.key};\n"
            f"        {password_file}\n    }}\n}}\n"
        )
        for path in (folder, cert, passwords, conf):
            path.chmod(0o755 if path.is_dir() else 0o644)
        result = subprocess.run(
            [*MAILGATE, "-t", "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            user=broken.runs_as,
            group=NOGROUP_GID if broken.runs_as is not None else None,
            extra_groups=[] if broken.runs_as is not None else None,
        )
    assert result.returncode == 1, result.stderr
    assert f'"{broken.key}"' in result.stderr, result.stderr
    assert "test failed" in result.stderr, result.stderr


# --- starttls only -------------------------------------------------------------------------------


def test_imap_login_is_refused_before_starttls_and_accepted_after(gateway: Gateway) -> None:
    with gateway.connect("imap_only") as client:
        assert client.line() == IMAP_GREETING
        assert client.ask(b"a LOGIN alice alice-pw") == b"a BAD invalid command\r\n"
        assert client.ask(b"b AUTHENTICATE PLAIN") == b"b BAD invalid command\r\n"
        assert client.ask(b"c STARTTLS") == b"c OK completed\r\n"
        client.starttls(gateway.tls())
        reply = client.ask(b"d LOGIN alice alice-pw", lambda line: line[:2] == b"d ")
        assert reply.startswith(b"d OK "), reply


def test_pop3_user_is_refused_before_stls_and_accepted_after(gateway: Gateway) -> None:
    with gateway.connect("pop3_only") as client:
        assert client.line() == POP3_GREETING
        assert client.ask(b"USER bob") == b"-ERR invalid command\r\n"
        assert client.ask(b"AUTH PLAIN") == b"-ERR invalid command\r\n"
        assert client.ask(b"STLS") == b"+OK\r\n"
        client.starttls(gateway.tls())
        assert client.ask(b"USER bob") == b"+OK\r\n"
        assert client.ask(b"PASS bob-pw").startswith(b"+OK")


def test_smtp_auth_is_refused_before_starttls_and_accepted_after(gateway: Gateway) -> None:
    carol = base64.b64encode(b"\0carol\0carol-pw")
    with gateway.connect("smtp_only") as client:
        assert client.line() == SMTP_GREETING
        assert client.ask(b"EHLO client.test", lambda line: line[3:4] != b"-").endswith(
            b"250 STARTTLS\r\n"
        )
        assert client.ask(b"AUTH PLAIN " + carol) == b"500 5.5.1 Invalid command\r\n"
        assert client.ask(b"STARTTLS") == b"220 2.0.0 Start TLS\r\n"
        client.starttls(gateway.tls())
        client.ask(b"EHLO client.test", lambda line: line[3:4] != b"-")
        assert client.ask(b"AUTH PLAIN " + carol) == b"235 2.0.0 OK\r\n"


@pytest.mark.parametrize(
    ("protocol", "commands", "logged_in"),
    [
        pytest.param("imap", b"a LOGIN alice alice-pw\nb LOGOUT\n", b"\na OK ", id="imap"),
        pytest.param("pop3", b"USER bob\nPASS bob-pw\nQUIT\n", b"\n+OK Logged in", id="pop3"),
        pytest.param(
            "smtp",
            b"EHLO client.test\nAUTH PLAIN " + base64.b64encode(b"\0carol\0carol-pw") + b"\nQUIT\n",
            b"\n235 2.0.0 OK",
            id="smtp",
        ),
    ],
)
def test_s_client_starttls_logs_in_on_a_starttls_only_server(
    gateway: Gateway, protocol: str, commands: bytes, logged_in: bytes
) -> None:
    spoken = run_s_client(gateway, protocol, str(gateway.port(f"{protocol}_only")), commands)
    assert logged_in in b"\n" + spoken, spoken
