"""How the gateway reaches its auth server: unix sockets, failures, timeouts, retry loops.

``auth_http unix:/path:/uri`` talks to an auth server on a unix socket (``Host: localhost``).
An auth server that refuses the connection or never answers costs the client a temporary
"internal server error" in its protocol, and the reason goes to the error log. ``Auth-Status:
WAIT`` and ``Auth-Wait`` make the gateway ask again; a long loop of them, with the digest
methods whose password the gateway must keep (CRAM-MD5, APOP), never takes a worker down.

Every test runs on nginx and on mailgate.
"""

from __future__ import annotations

import base64
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.servers.auth_http import (
    Answer,
    AuthServer,
    apop_digest,
    cram_md5_response,
    serving_on_unix,
)
from tests.servers.recording import silent_tcp
from tests.support.clients import LineClient
from tests.support.config import mail_block
from tests.support.gateway import Gateway

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    servers="""
    server { listen 127.0.0.1:%%PORT_unix%%; protocol imap; auth_http %%AUTH_UNIX%%; }
    server {
        listen 127.0.0.1:%%PORT_down_imap%%;
        protocol imap;
        auth_http 127.0.0.1:%%PORT_dead%%/auth;
    }
    server {
        listen 127.0.0.1:%%PORT_down_pop3%%;
        protocol pop3;
        auth_http 127.0.0.1:%%PORT_dead%%/auth;
    }
    server {
        listen 127.0.0.1:%%PORT_down_smtp%%;
        protocol smtp;
        auth_http 127.0.0.1:%%PORT_dead%%/auth;
    }
    server {
        listen 127.0.0.1:%%PORT_hung%%;
        protocol imap;
        auth_http 127.0.0.1:%%SILENT_AUTH%%/auth;
        auth_http_timeout 1s;
    }
    server { listen 127.0.0.1:%%PORT_cram%%; protocol imap; imap_auth plain cram-md5; }
    server { listen 127.0.0.1:%%PORT_apop%%; protocol pop3; pop3_auth plain apop; }
    server {
        listen 127.0.0.1:%%PORT_secret%%;
        protocol imap;
        auth_http_header X-Secret s3cret;
    }
""",
)

IMAP_GREETING = b"* OK IMAP4 ready\r\n"
INTERNAL_ERROR = {
    "imap": b"* BAD internal server error\r\n",
    "pop3": b"-ERR internal server error\r\n",
    "smtp": b"451 4.3.2 Internal server error\r\n",
}
# WAIT rounds in the loop tests: mailgate waits at least a second per round and gives up at
# the tenth, so a loop long enough to find state lost between rounds, and short enough to pass.
LOOPS = 3


@pytest.fixture(scope="module")
def gateway_values(auth_server: AuthServer) -> Iterator[Mapping[str, str | int]]:
    # A folder nginx's workers (user nobody) can traverse; pytest's are root-only.
    folder = Path(tempfile.mkdtemp(prefix="mailgate-auth-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        with serving_on_unix(auth_server, folder / "auth.sock") as url, silent_tcp() as port:
            yield {"AUTH_UNIX": url, "SILENT_AUTH": port}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def imap_greeted(gateway: Gateway, name: str) -> LineClient:
    client = gateway.connect(name)
    assert client.line() == IMAP_GREETING
    return client


def tagged(tag: bytes) -> object:
    return lambda line: line[: len(tag) + 1] == tag + b" "


def try_login(client: LineClient, protocol: str) -> bytes:
    """One login attempt in ``protocol`` after the greeting; the reply to it."""
    if protocol == "imap":
        return client.ask(b"a LOGIN alice alice-pw")
    if protocol == "pop3":
        assert client.ask(b"USER bob") == b"+OK\r\n"
        return client.ask(b"PASS bob-pw")
    client.ask(b"EHLO client.test", lambda line: line[3:4] == b" ")
    return client.ask(b"AUTH PLAIN " + base64.b64encode(b"\0carol\0carol-pw"))


# --- transport ---------------------------------------------------------------------------------


def test_unix_socket_auth_server_is_asked_with_host_localhost(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with imap_greeted(gateway, "unix") as client:
        assert client.ask(b"a LOGIN alice alice-pw", tagged(b"a")).startswith(b"a OK ")
    (request,) = auth_server.wait_for_requests(1)
    assert request.request_line == "GET /auth HTTP/1.0"
    assert request.lines[0] == "Host: localhost"


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_auth_server_refusing_connections_is_an_internal_error(
    gateway: Gateway, protocol: str
) -> None:
    with gateway.connect(f"down_{protocol}") as client:
        client.line()  # the greeting
        assert try_login(client, protocol) == INTERNAL_ERROR[protocol]
        assert client.at_eof()
    login = {"imap": "alice", "pop3": "bob", "smtp": "carol"}[protocol]
    server = gateway.port(f"down_{protocol}")
    assert gateway.wait_for_log(
        "(111: Connection refused) while in http auth state, client: 127.0.0.1,"
        f' server: 127.0.0.1:{server}, login: "{login}"'
    )


def test_auth_server_that_never_answers_times_out_after_auth_http_timeout(
    gateway: Gateway, gateway_values: Mapping[str, str | int]
) -> None:
    with imap_greeted(gateway, "hung") as client:
        started = time.monotonic()
        assert try_login(client, "imap") == INTERNAL_ERROR["imap"]
        waited = time.monotonic() - started
        assert client.at_eof()
    assert 0.8 < waited < 3.0, f"answered after {waited:.2f} s"
    assert gateway.wait_for_log(
        f"auth http server 127.0.0.1:{gateway_values['SILENT_AUTH']} timed out"
        f" (110: Connection timed out) while in http auth state, client: 127.0.0.1,"
        f' server: 127.0.0.1:{gateway.port("hung")}, login: "alice"'
    )


def test_auth_http_header_is_the_last_request_header(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    with imap_greeted(gateway, "secret") as client:
        assert client.ask(b"a LOGIN alice alice-pw", tagged(b"a")).startswith(b"a OK ")
    (request,) = auth_server.wait_for_requests(1)
    assert request.lines[-1] == "X-Secret: s3cret"


# --- retry loops --------------------------------------------------------------------------------


def cram_md5_login(client: LineClient, tag: bytes) -> bytes:
    """AUTHENTICATE CRAM-MD5 as alice; the tagged reply."""
    challenge = client.ask(tag + b" AUTHENTICATE CRAM-MD5")
    assert challenge.startswith(b"+ "), challenge
    response = cram_md5_response("alice", "alice-pw", base64.b64decode(challenge[2:]))
    return client.ask(base64.b64encode(response.encode()), tagged(tag))


def apop_login(client: LineClient, salt: str) -> bytes:
    return client.ask(f"APOP bob {apop_digest(salt, 'bob-pw')}".encode())


def pop3_salt(client: LineClient) -> str:
    found = re.fullmatch(rb"\+OK POP3 ready (<.*>)\r\n", client.line())
    assert found is not None
    return found.group(1).decode()


def still_serving(gateway: Gateway, workers: list[int]) -> None:
    """The same workers are alive, and a new session still logs in."""
    assert gateway.worker_pids() == workers
    with imap_greeted(gateway, "secret") as other:
        assert other.ask(b"z LOGIN alice alice-pw", tagged(b"z")).startswith(b"z OK ")


def test_cram_md5_survives_a_long_auth_status_wait_loop(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    workers = gateway.worker_pids()
    auth_server.answer_next(*[Answer.wait(0)] * LOOPS)
    with imap_greeted(gateway, "cram") as client:
        # nginx 1.22 re-asks with an empty Auth-Pass (it forgot the digest), so the table says
        # NO there; what matters here is that the session gets an answer at all.
        assert cram_md5_login(client, b"a")[:5] in (b"a OK ", b"a NO ")
    requests = auth_server.wait_for_requests(LOOPS + 1)
    assert len(requests) == LOOPS + 1
    assert {request["Auth-Login-Attempt"] for request in requests} == {"1"}
    still_serving(gateway, workers)


def test_apop_survives_a_long_auth_status_wait_loop(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    workers = gateway.worker_pids()
    auth_server.answer_next(*[Answer.wait(0)] * LOOPS)
    with gateway.connect("apop") as client:
        reply = apop_login(client, pop3_salt(client))
        assert reply.startswith((b"+OK", b"-ERR ")), reply
    assert len(auth_server.wait_for_requests(LOOPS + 1)) == LOOPS + 1
    still_serving(gateway, workers)


# mailgate only: nginx 1.22 clears the password once the first request is built, so every
# request after an Auth-Status: WAIT carries an empty Auth-Pass and a digest login can never
# succeed; mailgate asks again with the same digest and salt.
@pytest.mark.gateway(implementations=("mailgate",))
def test_cram_md5_digest_is_asked_again_unchanged_after_wait(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    auth_server.answer_next(*[Answer.wait(0)] * 3)
    with imap_greeted(gateway, "cram") as client:
        assert cram_md5_login(client, b"a").startswith(b"a OK ")
    requests = auth_server.wait_for_requests(4)
    assert len({(request["Auth-Pass"], request["Auth-Salt"]) for request in requests}) == 1


def test_cram_md5_can_be_retried_after_errors_with_auth_wait(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    workers = gateway.worker_pids()
    auth_server.answer_next(*[Answer.status("Try again", ("Auth-Wait", "1"))] * 2)
    with imap_greeted(gateway, "cram") as client:
        assert cram_md5_login(client, b"a") == b"a NO Try again\r\n"
        assert cram_md5_login(client, b"b") == b"b NO Try again\r\n"
        assert cram_md5_login(client, b"c").startswith(b"c OK ")
    attempts = [request["Auth-Login-Attempt"] for request in auth_server.wait_for_requests(3)]
    assert attempts == ["1", "2", "3"]
    still_serving(gateway, workers)


def test_apop_can_be_retried_after_errors_with_auth_wait(
    gateway: Gateway, auth_server: AuthServer
) -> None:
    workers = gateway.worker_pids()
    auth_server.answer_next(*[Answer.status("Try again", ("Auth-Wait", "1"))] * 2)
    with gateway.connect("apop") as client:
        salt = pop3_salt(client)
        assert apop_login(client, salt) == b"-ERR Try again\r\n"
        assert apop_login(client, salt) == b"-ERR Try again\r\n"
        assert apop_login(client, salt).startswith(b"+OK")
    attempts = [request["Auth-Login-Attempt"] for request in auth_server.wait_for_requests(3)]
    assert attempts == ["1", "2", "3"]
    still_serving(gateway, workers)
