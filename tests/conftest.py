"""Shared fixtures: the real master in a subprocess, real backends and gateways.

The library they are built from is tests/support/ (test modules import it from there) and the
real-server launchers are tests/servers/; this file holds fixtures and hooks only.

Session fixtures run the real backends once: ``dovecot`` (IMAP, POP3, SASL), ``postfix`` (SMTP
with XCLIENT and SASL through Dovecot), ``auth_server`` (an auth_http server routing the
``USERS`` to them; reset before every test that uses it) and ``tls_files`` (a trustme CA and a
server certificate for localhost/127.0.0.1).

``gateway`` runs the module's ``GATEWAY_CONFIG`` (the ``mail {}`` block, nginx syntax) on real
nginx and on mailgate: every test that uses it runs once per implementation, unless marked
``@pytest.mark.gateway(implementations=("mailgate",))`` with a comment saying why.

Every test that uses a fixture starting a real server or the real master is marked ``slow``
here, whatever its module says, so ``make unit`` (``-m "not slow"``) never starts one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.servers import nginx
from tests.servers.auth_http import Account, AuthServer, running_auth_server
from tests.servers.dovecot import DovecotInfo, running_dovecot
from tests.servers.postfix import PostfixInfo, running_postfix
from tests.support.accounts import USERS
from tests.support.gateway import (
    DEFAULT_CONNECTIONS,
    DEFAULT_WORKERS,
    IMPLEMENTATIONS,
    Gateway,
    running_gateway,
)
from tests.support.master import (
    START_TIMEOUT,
    Master,
    config_text,
    master_ready,
    spawn_master,
)
from tests.support.pki import TlsFiles, write_tls_files
from tests.support.processes import free_port, wait_until

# Fixtures that start Dovecot, Postfix, nginx, dnsmasq or the real master (directly or through
# another fixture): a test using one needs more than Python, so it belongs to `make test` only.
SERVER_FIXTURES = frozenset(
    {"mailgate", "dovecot", "postfix", "auth_server", "gateway", "gate", "dns_server"}
)


@pytest.fixture
def mailgate(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    """Start the real master: ``mailgate(main=..., listen=..., workers=N, text=...)``.

    ``text`` replaces the whole configuration (use ``{port}``, ``{pid}``, ``{log}``);
    ``wait=False`` returns at once (for start-up failures and ``daemon on``);
    ``expect`` is the number of workers to wait for (default: ``workers``).
    """
    started: list[Master] = []

    def start(
        *,
        text: str | None = None,
        wait: bool = True,
        expect: int | None = None,
        args: tuple[str, ...] = (),
        **kwargs: object,
    ) -> Master:
        n = len(started)
        port = free_port()
        pid, log = tmp_path / f"mailgate{n}.pid", tmp_path / f"error{n}.log"
        conf, stderr = tmp_path / f"mailgate{n}.conf", tmp_path / f"stderr{n}.txt"
        if text is None:
            conf.write_text(config_text(port=port, pid=pid, log=log, **kwargs))  # type: ignore[arg-type]
        else:
            conf.write_text(text.format(port=port, pid=pid, log=log))
        proc = spawn_master(["-c", str(conf), *args], stderr)
        master = Master(proc, conf, pid, log, stderr, port)
        started.append(master)
        if wait:
            workers = int(str(kwargs.get("workers", 2))) if expect is None else expect
            assert wait_until(lambda: master_ready(master, workers), START_TIMEOUT), master.log()
        return master

    yield start
    for master in started:
        master.kill()


# --- Real backends, started once per session ------------------------------------------------


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotInfo]:
    with running_dovecot(tmp_path_factory.mktemp("backends"), USERS) as info:
        yield info


@pytest.fixture(scope="session")
def postfix(
    tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotInfo
) -> Iterator[PostfixInfo]:
    with running_postfix(tmp_path_factory.mktemp("backends"), dovecot) as info:
        yield info


@pytest.fixture(scope="session")
def auth_server(dovecot: DovecotInfo, postfix: PostfixInfo) -> Iterator[AuthServer]:
    """An auth_http server that routes ``USERS`` to Dovecot (IMAP, POP3) and Postfix (SMTP)."""
    backends = {
        "imap": (dovecot.host, dovecot.imap_port),
        "pop3": (dovecot.host, dovecot.pop3_port),
        "smtp": (postfix.host, postfix.smtp_port),
    }
    accounts = {user: Account(password) for user, password in USERS.items()}
    with running_auth_server(backends, accounts) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_auth_server(request: pytest.FixtureRequest) -> None:
    """Each test starts with the auth server's initial table and no recorded requests."""
    if "auth_server" in request.fixturenames:
        server: AuthServer = request.getfixturevalue("auth_server")
        server.reset()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


# --- Gateways: the same config on nginx and on mailgate ---------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gateway(implementations): run a gateway test only on these implementations",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses ``gateway`` once per implementation (module-scoped)."""
    if "gateway" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("gateway")
    implementations = IMPLEMENTATIONS if marker is None else marker.kwargs["implementations"]
    metafunc.parametrize("gateway", implementations, indirect=True, scope="module")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that uses a server fixture, so ``-m "not slow"`` skips it."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def gateway_values() -> Mapping[str, str | int]:
    """Extra ``%%NAME%%`` placeholders for ``GATEWAY_CONFIG``; a module overrides this fixture
    to give the gateway, say, its own DNS server's address or a client CA file."""
    return {}


@pytest.fixture(scope="module")
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    auth_server: AuthServer,
    tls_files: TlsFiles,
    gateway_values: Mapping[str, str | int],
) -> Iterator[Gateway]:
    """The module's ``GATEWAY_CONFIG`` running on nginx or mailgate (the test's parameter).

    Placeholders: ``%%PORT_<name>%%`` (a free port; ``gateway.port("<name>")``), ``%%CERT%%``,
    ``%%KEY%%``, ``%%AUTH_HTTP%%`` (the auth server's URL), ``%%DOVECOT_IMAP%%``,
    ``%%DOVECOT_POP3%%``, ``%%POSTFIX_SMTP%%``, and whatever the module's ``gateway_values``
    fixture adds. A module-level ``GATEWAY_WORKERS = N`` sets ``worker_processes`` (default 2),
    ``GATEWAY_WORKER_CONNECTIONS = N`` sets ``worker_connections`` (default 512).
    """
    implementation: str = request.param
    if implementation == "nginx" and (why := nginx.missing()) is not None:
        # make test installs nginx: without it the wire comparison would silently shrink.
        pytest.fail(why)
    values: dict[str, str | int] = {
        "CERT": str(tls_files.cert),
        "KEY": str(tls_files.key),
        "AUTH_HTTP": auth_server.url,
        "DOVECOT_IMAP": auth_server.backends["imap"][1],
        "DOVECOT_POP3": auth_server.backends["pop3"][1],
        "POSTFIX_SMTP": auth_server.backends["smtp"][1],
        **gateway_values,
    }
    folder = tmp_path_factory.mktemp(implementation)
    template: str = request.module.GATEWAY_CONFIG
    workers: int = getattr(request.module, "GATEWAY_WORKERS", DEFAULT_WORKERS)
    connections: int = getattr(request.module, "GATEWAY_WORKER_CONNECTIONS", DEFAULT_CONNECTIONS)
    with running_gateway(
        implementation,
        template,
        folder,
        values,
        tls_files.ca,
        workers=workers,
        connections=connections,
    ) as started:
        yield started
