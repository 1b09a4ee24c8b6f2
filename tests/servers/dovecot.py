"""A private Dovecot 2.3 instance (IMAP, POP3, SASL socket) for tests and the demo.

Everything lives under one folder: config, passwd-file, base_dir, state_dir and the maildirs
(owned by nobody:nogroup), so it never touches /etc/dovecot or /run/dovecot and several
instances can run side by side. Only the log goes straight into the caller's `tmpdir`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.files import NOBODY_UID, chown_nobody, log_tail, reachable_dir
from tests.servers.ports import LOOPBACK, free_ports, wait_for_greeting

DOVECOT = "/usr/sbin/dovecot"
DEFAULT_USERS: Mapping[str, str] = {"alice": "alice-pw", "bob": "bob-pw"}
STOP_TIMEOUT = 10.0

# Tuned for a proxy in front: every session comes from 127.0.0.1 and many run at once.
CONFIG_TEMPLATE = """\
# Written by tests/servers/dovecot.py: a self-contained test instance.
instance_name = {instance_name}
base_dir = {base_dir}
state_dir = {state_dir}
log_path = {log_path}
protocols = imap pop3
listen = {host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Failed logins must not slow the tests down: no 2 s failure delay (a failure still takes
# about 0.5 s), and no per-IP auth penalty, which after two failures from 127.0.0.1 delays
# every later login, good or bad, by up to 15 s. Closing anvil's penalty socket disables it.
auth_failure_delay = 0
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
default_client_limit = 2048
default_process_limit = 500

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {users_file}
}}

protocol imap {{
  mail_max_userip_connections = 10000
}}
protocol pop3 {{
  mail_max_userip_connections = 10000
}}

# High-performance login mode: few long-lived login processes, each serving many clients.
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 1024
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 1024
}}

service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

# Postfix's smtpd (user postfix) authenticates SMTP AUTH through base_dir/{auth_socket}.
service auth {{
  unix_listener {auth_socket} {{
    mode = 0666
  }}
}}
"""


@dataclass(frozen=True)
class DovecotInfo:
    """Where a Dovecot instance listens and keeps its files."""

    host: str
    imap_port: int
    pop3_port: int
    auth_socket_path: Path  # SASL socket for Postfix (`smtpd_sasl_type = dovecot`)
    maildir_root: Path  # <maildir_root>/<user>/Maildir/{new,cur,tmp}
    users: Mapping[str, str]  # user -> plaintext password
    config_path: Path
    log_path: Path
    base_dir: Path
    domain: str = "example.test"
    _counter: Iterator[int] = field(default_factory=itertools.count, compare=False, repr=False)

    def maildir(self, user: str) -> Path:
        """The user's INBOX maildir (the folder holding new/, cur/ and tmp/)."""
        return self.maildir_root / user / "Maildir"

    def address(self, user: str) -> str:
        """The user's mail address in the test domain, as Postfix delivers it."""
        return f"{user}@{self.domain}"

    def add_message(self, user: str, message: bytes) -> Path:
        """Plant `message` in the user's INBOX; the next SELECT/STAT sees it."""
        return deliver_to_maildir(self.maildir(user), message, next(self._counter))


def deliver_to_maildir(maildir: Path, message: bytes, serial: int = 0) -> Path:
    """Write a message into maildir/new the way an MDA does: tmp/ first, then rename.

    The file belongs to nobody, because Dovecot's imap/pop3 processes run as that user and
    move the file into cur/ once seen.
    """
    name = f"{time.time_ns()}.M{serial}P{os.getpid()}.{socket.gethostname()}"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(message.replace(b"\r\n", b"\n"))  # maildir files use bare LF
    chown_nobody(tmp)
    final = maildir / "new" / name
    tmp.rename(final)
    return final


def read_maildir(maildir: Path) -> list[bytes]:
    """Every message in a maildir (new/ and cur/), oldest first; none if it does not exist yet."""
    for _attempt in range(10):
        try:
            return _read_maildir_once(maildir)
        except FileNotFoundError:  # Dovecot moved a file from new/ to cur/ as we read: again
            continue
    return _read_maildir_once(maildir)


def _read_maildir_once(maildir: Path) -> list[bytes]:
    files = [
        p for sub in ("new", "cur") if (maildir / sub).is_dir() for p in (maildir / sub).iterdir()
    ]
    files.sort(key=lambda p: p.stat().st_mtime_ns)
    return [p.read_bytes() for p in files]


def _make_maildirs(root: Path, users: Mapping[str, str]) -> None:
    """Create <root>/<user>/Maildir/{new,cur,tmp} owned by nobody."""
    for user in users:
        home = root / user
        paths = [home, home / "Maildir"]
        paths += [home / "Maildir" / sub for sub in ("new", "cur", "tmp")]
        for path in paths:
            path.mkdir(mode=0o700, exist_ok=True)
        chown_nobody(*paths)


def _write_users_file(path: Path, root: Path, users: Mapping[str, str]) -> None:
    """passwd-file lines: user:{PLAIN}password:uid:gid::home::."""
    lines = []
    for user, password in users.items():
        if ":" in user + password or "\n" in user + password:
            raise ValueError(f"passwd-file cannot hold user {user!r} / its password")
        lines.append(f"{user}:{{PLAIN}}{password}:{NOBODY_UID}:{NOBODY_UID}::{root / user}::\n")
    path.write_text("".join(lines))
    path.chmod(0o644)  # read by the auth process, which runs as user dovecot


def write_config(
    run: Path,
    log_path: Path,
    users: Mapping[str, str],
    imap_port: int,
    pop3_port: int,
    *,
    host: str = LOOPBACK,
) -> DovecotInfo:
    """Lay out a complete instance under `run` and return where it will listen."""
    base_dir = run / "base"
    state_dir = run / "state"
    maildir_root = run / "mail"
    for path in (base_dir, state_dir, maildir_root):
        path.mkdir(mode=0o755, exist_ok=True)
    _make_maildirs(maildir_root, users)
    users_file = run / "users"
    _write_users_file(users_file, maildir_root, users)
    auth_socket = base_dir / "auth-sasl"
    config_path = run / "dovecot.conf"
    config_path.write_text(
        CONFIG_TEMPLATE.format(
            instance_name=f"mailgate-dovecot-{imap_port}",
            base_dir=base_dir,
            state_dir=state_dir,
            log_path=log_path,
            host=host,
            users_file=users_file,
            imap_port=imap_port,
            pop3_port=pop3_port,
            auth_socket=auth_socket.name,
        )
    )
    return DovecotInfo(
        host=host,
        imap_port=imap_port,
        pop3_port=pop3_port,
        auth_socket_path=auth_socket,
        maildir_root=maildir_root,
        users=dict(users),
        config_path=config_path,
        log_path=log_path,
        base_dir=base_dir,
    )


def wait_until_ready(info: DovecotInfo, alive: Callable[[], bool] = lambda: True) -> None:
    """Block until IMAP, POP3 and the SASL socket all answer; show the log tail if not."""
    try:
        wait_for_greeting(info.host, info.imap_port, b"* OK", alive=alive)
        wait_for_greeting(info.host, info.pop3_port, b"+OK", alive=alive)
        _wait_for_socket(info.auth_socket_path)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"dovecot did not start: {exc}\n{log_tail(info.log_path)}") from exc


def _wait_for_socket(path: Path, timeout: float = 5.0) -> None:
    """The auth listener is created by the auth process, a little after the logins."""
    deadline = time.monotonic() + timeout
    while not path.is_socket():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    """terminate, wait, then kill: dovecot's master stops its children on SIGTERM."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_dovecot(
    tmpdir: Path,
    users: Mapping[str, str] = DEFAULT_USERS,
    *,
    imap_port: int | None = None,
    pop3_port: int | None = None,
) -> Iterator[DovecotInfo]:
    """Run `dovecot -F` with a fresh config until the block exits.

    Ports default to free loopback ports. The log is `tmpdir/dovecot.log`; the rest lives in
    `tmpdir/dovecot` (a symlink into /tmp when tmpdir is private, see `reachable_dir`).
    """
    ports = free_ports(2)
    with reachable_dir(tmpdir, "dovecot") as run:
        info = write_config(
            run, tmpdir / "dovecot.log", users, imap_port or ports[0], pop3_port or ports[1]
        )
        with (tmpdir / "dovecot.stderr").open("wb") as stderr:  # the child keeps its own copy
            proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(info.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # a Ctrl-C in the terminal must not hit it mid-teardown
            )
        try:
            wait_until_ready(info, alive=lambda: proc.poll() is None)
            yield info
        finally:
            _stop_process(proc)


def start_daemon(info: DovecotInfo) -> None:
    """Start a written instance detached (dovecot forks into the background), for the demo."""
    subprocess.run([DOVECOT, "-c", str(info.config_path)], check=True)
    wait_until_ready(info)


def stop_daemon(config_path: Path) -> None:
    """Stop a detached instance; quiet if it is not running."""
    subprocess.run(
        [DOVECOT, "-c", str(config_path), "stop"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
