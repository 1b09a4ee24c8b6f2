"""``ssl_conf_command`` with file arguments, started from a folder unrelated to the config.

nginx 1.22 (``ngx_ssl_conf_commands``) asks OpenSSL which commands take a file or a folder
(``SSL_CONF_cmd_value_type``) and resolves those values against its configuration prefix, the
configuration file's folder, as it does for ``ssl_certificate``; it never changes its working
directory. mailgate does the same, so ``ssl_conf_command Certificate override.crt;`` serves
the override from any working directory, on both. ``mailgate -t`` also checks that each file
or folder exists, naming the directive's file and line.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.servers import nginx
from tests.servers.auth_http import AuthServer
from tests.support.config import mail_block
from tests.support.gateway import IMPLEMENTATIONS, Gateway, running_gateway
from tests.support.master import MAILGATE
from tests.support.pki import TlsFiles

pytestmark = pytest.mark.slow

GATEWAY_CONFIG = mail_block(
    servers="""\
    server {
        listen 127.0.0.1:%%PORT_imaps%% ssl;
        protocol imap;
        ssl_certificate %%CERT%%;
        ssl_certificate_key %%KEY%%;
        ssl_conf_command Certificate override.crt;
        ssl_conf_command PrivateKey override.key;
    }
""",
)


@dataclass(frozen=True)
class Started:
    gateway: Gateway
    override_ca: Path  # the only CA that trusts the override certificate
    cwd: Path  # the working directory the gateway was started from


def write_override(folder: Path) -> Path:
    """override.crt and override.key in ``folder``, under a CA of their own; returns that CA."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1", common_name="override.example")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "override.crt"))
    leaf.private_key_pem.write_to_path(str(folder / "override.key"))
    ca.cert_pem.write_to_path(str(folder / "override-ca.crt"))
    return folder / "override-ca.crt"


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def started(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    auth_server: AuthServer,
    tls_files: TlsFiles,
) -> Iterator[Started]:
    """The gateway on ``GATEWAY_CONFIG``, started from an empty folder of its own."""
    if request.param == "nginx" and (why := nginx.missing()) is not None:
        pytest.fail(why)  # as the gateway fixture: no silent shrinking to mailgate alone
    folder = tmp_path_factory.mktemp(request.param)
    cwd = tmp_path_factory.mktemp("unrelated")
    override_ca = write_override(folder)
    values = {"CERT": str(tls_files.cert), "KEY": str(tls_files.key), "AUTH_HTTP": auth_server.url}
    with contextlib.ExitStack() as stack:
        # The process keeps the working directory it started in; the test's is restored at once.
        with contextlib.chdir(cwd):
            gateway = stack.enter_context(
                running_gateway(request.param, GATEWAY_CONFIG, folder, values, tls_files.ca)
            )
        yield Started(gateway, override_ca, cwd)


def master_cwd(gateway: Gateway) -> Path:
    pid = int((gateway.error_log.parent / "nginx.pid").read_text())
    return Path(os.readlink(f"/proc/{pid}/cwd"))


def test_gateway_runs_from_the_unrelated_folder(started: Started) -> None:
    assert master_cwd(started.gateway) == started.cwd
    assert not (started.cwd / "override.crt").exists()


def test_conf_command_certificate_is_served_whatever_the_working_directory(
    started: Started,
) -> None:
    # Verifying against the override's own CA succeeds only if the override is served.
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{started.gateway.port('imaps')}",
            "-CAfile",
            str(started.override_ca),
            "-verify_return_error",
            "-quiet",
        ],
        input=b"a LOGOUT\r\n",
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert b"CN = override.example" in result.stderr
    assert result.stdout.startswith(b"* OK")


# --- mailgate -t ----------------------------------------------------------------------------
# mailgate only. nginx -t refuses a missing file too, but in OpenSSL's words and without the
# line: SSL_CONF_cmd("Certificate", "/full/name") failed (SSL: error:80000002:system library::
# No such file or directory:calling fopen(...) ...). It accepts a missing folder, which OpenSSL
# looks into only when a client certificate needs it; mailgate refuses one at start.

CONF_COMMAND_LINE = 3


def run_t_elsewhere(folder: Path, command: str) -> subprocess.CompletedProcess[str]:
    """``mailgate -t`` on a config in ``folder`` holding ``command``, run from another folder."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))
    (folder / "cwd").mkdir()
    conf = folder / "mailgate.conf"
    conf.write_text(
        "mail { server { listen 127.0.0.1:993 ssl; proxy_pass 127.0.0.1:143;\n"
        "ssl_certificate cert.pem; ssl_certificate_key key.pem;\n"
        f"{command}\n"
        "} }\n"
    )
    return subprocess.run(
        [*MAILGATE, "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=folder / "cwd",
    )


def test_t_accepts_conf_command_files_beside_the_configuration(tmp_path: Path) -> None:
    write_override(tmp_path)
    result = run_t_elsewhere(tmp_path, "ssl_conf_command Certificate override.crt;")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("command", "missing"),
    [("Certificate", "missing.crt"), ("VerifyCAPath", "certs")],
    ids=["file", "folder"],
)
def test_t_names_the_line_of_a_missing_conf_command_file_or_folder(
    tmp_path: Path, command: str, missing: str
) -> None:
    result = run_t_elsewhere(tmp_path, f"ssl_conf_command {command} {missing};")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f'mailgate: [emerg] stat() "{tmp_path / missing}" failed '
        f"(2: No such file or directory) in {tmp_path / 'mailgate.conf'}:{CONF_COMMAND_LINE}"
    )
