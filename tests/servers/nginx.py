"""Debian's nginx with its mail module, as the reference the wire-level tests are proven on.

nginx runs in the foreground from a config file under a temporary folder:
``nginx -p RUN -c RUN/nginx.conf -g "daemon off; master_process on; pid ...; error_log ... info;"``.
Those four directives are given with ``-g`` only: nginx rejects a ``-g`` directive that the file
repeats ("is duplicate"), so config templates must not contain them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.servers.files import log_tail
from tests.servers.ports import LOOPBACK

NGINX = Path("/usr/sbin/nginx")
MAIL_MODULE = Path("/usr/lib/nginx/modules/ngx_mail_module.so")
LOAD_MAIL_MODULE = f"load_module {MAIL_MODULE};"
PACKAGES = "nginx-light libnginx-mod-mail"
STOP_TIMEOUT = 10.0


def missing() -> str | None:
    """Why nginx cannot run here, or None when it can."""
    for path in (NGINX, MAIL_MODULE):
        if not path.exists():
            return f"{path} is missing (apt-get install {PACKAGES})"
    return None


def global_directives(pid: Path, error_log: Path) -> str:
    """The main-context directives given on the command line (``-g``)."""
    return f"daemon off; master_process on; pid {pid}; error_log {error_log} info;"


def command(prefix: Path, conf: Path, pid: Path, error_log: Path) -> list[str]:
    return [str(NGINX), "-p", str(prefix), "-c", str(conf), "-g", global_directives(pid, error_log)]


def accepts(port: int) -> bool:
    """True if something accepts TCP connections on the loopback port."""
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM (nginx's fast shutdown), then KILL the whole process group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def running_nginx(
    prefix: Path, conf: Path, ports: Iterable[int], *, timeout: float = 10.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run nginx on ``conf`` until the block exits; ready once every port accepts.

    The error log is ``prefix/error.log``, the pid file ``prefix/nginx.pid``; start-up errors
    (printed on stderr before the log is open) land in ``prefix/stderr.txt``.
    """
    error_log = prefix / "error.log"
    with (prefix / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen(
            command(prefix, conf, prefix / "nginx.pid", error_log),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not all(accepts(port) for port in ports):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if proc.poll() is not None or not all(accepts(port) for port in ports):
            raise RuntimeError(
                f"nginx did not start (exit {proc.poll()}):\n"
                f"{(prefix / 'stderr.txt').read_text()}\n{log_tail(error_log)}"
            )
        yield proc
    finally:
        stop(proc)
