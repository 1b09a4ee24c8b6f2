"""TLS harness: a PKI made in a temp folder, memory-BIO handshakes, a socket server, s_client.

``serve(ctx, server)`` runs a tiny server in a thread: each accepted connection handshakes
with the built context on a blocking socket, records what the session glue would look at
(:class:`Seen`), writes one greeting line and closes, so ``openssl s_client -ign_eof`` reads
the greeting (and any TLS 1.3 tickets sent before it) and then exits.
"""

from __future__ import annotations

import contextlib
import datetime
import queue
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker.tls import client_cert, context, native


def session_reused(conn: SSL.Connection) -> bool:
    """Whether the handshake on ``conn`` resumed a session (pyOpenSSL 23 lacks the method;
    cryptography's binding has the function)."""
    return bool(native.pyopenssl_binding()[1].SSL_session_reused(native.connection_cdata(conn)))


def server_config(**settings: Any) -> model.ServerConfig:
    listen = model.Listen(socket.AF_INET, "127.0.0.1", 993, model.Source("t.conf", 3), ssl=True)
    settings.setdefault("protocol", model.Protocol.IMAP)
    return model.ServerConfig(source=model.Source("t.conf", 2), listens=(listen,), **settings)


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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
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


# -- memory BIOs -----------------------------------------------------------------------------


def client_context(**options: Any) -> SSL.Context:
    """A pyOpenSSL client context; ``max_version``, ``ciphers``, ``alpn``, ``no_ticket``."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if "max_version" in options:
        ctx.set_max_proto_version(options["max_version"])
    if "ciphers" in options:
        ctx.set_cipher_list(options["ciphers"])
    if "alpn" in options:
        ctx.set_alpn_protos(options["alpn"])
    if options.get("no_ticket"):
        ctx.set_options(SSL.OP_NO_TICKET)
    return ctx


def handshake(
    server_ctx: SSL.Context,
    client_ctx: SSL.Context | None = None,
    session: SSL.Session | None = None,
) -> tuple[SSL.Connection, SSL.Connection]:
    """Pump a handshake over memory BIOs; raise the first side's SSL.Error if it fails."""
    client = SSL.Connection(client_ctx or client_context())
    client.set_connect_state()
    if session is not None:
        client.set_session(session)
    srv = SSL.Connection(server_ctx)
    srv.set_accept_state()
    done = set()
    for _ in range(20):
        for conn in (client, srv):
            try:
                conn.do_handshake()
                done.add(id(conn))
            except SSL.WantReadError:
                pass
        for src, dst in ((client, srv), (srv, client)):
            with contextlib.suppress(SSL.WantReadError):
                dst.bio_write(src.bio_read(65536))
        # TLS 1.3 tickets arrive after the client finished: let it read them.
        with contextlib.suppress(SSL.WantReadError, SSL.ZeroReturnError):
            if len(done) == 2:
                client.recv(1)
    assert len(done) == 2, "handshake did not complete"
    return client, srv


# -- sockets and s_client ----------------------------------------------------------------------


@dataclass
class Seen:
    """What one server-side connection looked like after its handshake."""

    error: str = ""
    protocol: str = ""
    cipher: str = ""
    reused: bool = False
    cert_key: str = ""  # "RSA" or "EC": the server certificate chosen for this client
    outcome: client_cert.VerifyOutcome | None = None
    info: client_cert.CertInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _serve_one(sock: socket.socket, ctx: SSL.Context, server: model.ServerConfig) -> Seen:
    # pyOpenSSL works on the file descriptor: a Python-level timeout would make it
    # non-blocking. A receive timeout at the OS level keeps a stuck test from hanging.
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
    conn = SSL.Connection(ctx, sock)
    conn.set_accept_state()
    try:
        conn.do_handshake()
    except SSL.Error as err:
        return Seen(error=repr(err))
    seen = Seen(reused=session_reused(conn))
    seen.protocol, seen.cipher = client_cert.tls_summary(conn)
    own = conn.get_certificate()
    seen.cert_key = type(own.to_cryptography().public_key()).__name__ if own else ""
    seen.outcome = client_cert.verify_result(conn, server)
    seen.info = client_cert.client_cert_info(conn)
    with contextlib.suppress(SSL.Error, OSError):
        conn.sendall(b"* OK greeting\r\n")
        conn.shutdown()
    return seen


@contextlib.contextmanager
def serving(
    ctx: SSL.Context, server: model.ServerConfig
) -> Iterator[tuple[int, queue.Queue[Seen]]]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    results: queue.Queue[Seen] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            with sock:
                results.put(_serve_one(sock, ctx, server))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], results
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def s_client(port: int, *args: str) -> str:
    """Run ``openssl s_client`` against the test server; stdout and stderr together."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return done.stdout + done.stderr


Connect = Callable[..., tuple[str, Seen]]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """``connect(server_config, *s_client_args) -> (s_client output, what the server saw)``."""
    with contextlib.ExitStack() as stack:
        servers: list[tuple[model.ServerConfig, int, queue.Queue[Seen]]] = []

        def run(server: model.ServerConfig, *args: str) -> tuple[str, Seen]:
            # One context (and port) per server config, reused across calls as in a worker.
            found = [(port, results) for known, port, results in servers if known is server]
            if not found:
                found = [stack.enter_context(serving(context.build_context(server), server))]
                servers.append((server, *found[0]))
            port, results = found[0]
            output = s_client(port, *args)
            return output, results.get(timeout=10)

        yield run
