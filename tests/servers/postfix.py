"""A private Postfix instance (SMTP with XCLIENT and Dovecot SASL) for tests and the demo.

The instance has its own config_directory, queue_directory and data_directory, so it neither
needs nor disturbs Debian's default instance (/etc/postfix, /var/spool/postfix), and several
instances run side by side. Mail for the test domain is delivered by Postfix's `virtual` agent
into `<maildir_root>/<user>/Maildir/`: with a DovecotInfo that root is Dovecot's, so a message
sent over SMTP can be read back over IMAP/POP3; without one, a local root with a catch-all.
Nothing is relayed off the machine and no DNS is used.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.dovecot import DovecotInfo, read_maildir
from tests.servers.files import chown_nobody, log_tail, reachable_dir
from tests.servers.ports import LOOPBACK, free_ports, wait_for_greeting

POSTFIX = "/usr/sbin/postfix"
DOMAIN = "example.test"
CATCHALL = "catchall"  # mailbox of every recipient when no Dovecot is given
STOP_TIMEOUT = 10.0

MAIN_CF = """\
# Written by tests/servers/postfix.py: a self-contained test instance.
compatibility_level = 3.6
queue_directory = {queue_dir}
data_directory = {data_dir}
syslog_name = postfix-mailgate-{port}
maillog_file = {log_path}
# postlogd only writes below these prefixes (Debian's default is /var, /dev/stdout).
maillog_file_prefixes = {log_dir}
myhostname = backend.{domain}
mydomain = {domain}
myorigin = $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no

# Only the virtual domain is ours; nothing leaves the machine, nothing asks DNS.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
default_transport = error:tests send no mail off this machine
smtp_host_lookup = native
smtp_dns_support_level = disabled
lmtp_host_lookup = native
smtpd_peername_lookup = no

virtual_mailbox_domains = {domain}
virtual_mailbox_base = {maildir_root}
virtual_mailbox_maps = texthash:{mailbox_map}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534

# mailgate talks for its clients: trust its XCLIENT, accept whatever loopback sends.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_client_connection_count_limit = 0
smtpd_client_event_limit_exceptions = 0.0.0.0/0
# Failed commands must not slow the tests down.
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 200
in_flow_delay = 0
default_process_limit = 500
{sasl}"""

SASL_CF = """\
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth_socket}
smtpd_sasl_security_options = noanonymous
"""

# chroot is "n" everywhere: a chrooted smtpd could not reach Dovecot's socket or the maps.
MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{host}:{port} inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass(frozen=True)
class PostfixInfo:
    """Where a Postfix instance listens and where it delivers."""

    host: str
    smtp_port: int
    config_dir: Path
    queue_dir: Path
    log_path: Path
    maildir_root: Path  # <maildir_root>/<user>/Maildir/ (Dovecot's root when given one)
    domain: str
    sasl: bool  # SMTP AUTH offered (through Dovecot)
    catchall: bool  # every recipient lands in the `catchall` mailbox

    def address(self, user: str) -> str:
        """A recipient address that this instance delivers locally."""
        return f"{user}@{self.domain}"

    def maildir(self, user: str) -> Path:
        """The maildir a message for `user@domain` ends up in."""
        return self.maildir_root / (CATCHALL if self.catchall else user) / "Maildir"

    def wait_for_messages(self, user: str, count: int = 1, timeout: float = 10.0) -> list[bytes]:
        """Messages in the user's maildir once there are at least `count` (delivery is async)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = read_maildir(self.maildir(user))
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(messages)}/{count} messages for {user} after {timeout}s\n"
                    + log_tail(self.log_path)
                )
            time.sleep(0.05)


def _mailbox_map(domain: str, users: Iterable[str]) -> str:
    """virtual_mailbox_maps lines; the trailing slash makes `virtual` write maildir format."""
    lines = [f"{user}@{domain} {user}/Maildir/" for user in users]
    if not lines:
        lines = [f"@{domain} {CATCHALL}/Maildir/"]
    return "\n".join(lines) + "\n"


def _backdate(config_dir: Path) -> None:
    """Make the config files look a minute old.

    Postfix commands re-read a main.cf changed within the last second or two, sleeping 300 ms
    each time, in case an editor is still writing it: a fresh config cost 2-3 s per start.
    """
    past = time.time() - 60
    for path in config_dir.iterdir():
        os.utime(path, (past, past))


def write_config(
    run: Path,
    log_path: Path,
    port: int,
    dovecot: DovecotInfo | None,
    *,
    host: str = LOOPBACK,
) -> PostfixInfo:
    """Write main.cf/master.cf/maps for an instance under `run` and return its description."""
    config_dir = run / "etc"
    config_dir.mkdir(exist_ok=True)
    # The postfix command chdirs here first; `postfix-script check-fatal` creates the rest.
    (run / "queue").mkdir(mode=0o755, exist_ok=True)
    if dovecot is not None:
        maildir_root, users, domain = dovecot.maildir_root, list(dovecot.users), dovecot.domain
    else:
        maildir_root, users, domain = run / "mail", [], DOMAIN
        maildir_root.mkdir(exist_ok=True)
        chown_nobody(maildir_root)  # `virtual` creates the catch-all maildir as nobody
    mailbox_map = config_dir / "vmailbox"
    mailbox_map.write_text(_mailbox_map(domain, users))
    sasl = "" if dovecot is None else SASL_CF.format(auth_socket=dovecot.auth_socket_path)
    (config_dir / "main.cf").write_text(
        MAIN_CF.format(
            queue_dir=run / "queue",
            data_dir=run / "data",
            port=port,
            log_path=log_path,
            log_dir=log_path.parent,
            domain=domain,
            maildir_root=maildir_root,
            mailbox_map=mailbox_map,
            sasl=sasl,
        )
    )
    (config_dir / "master.cf").write_text(MASTER_CF.format(host=host, port=port))
    _backdate(config_dir)
    return PostfixInfo(
        host=host,
        smtp_port=port,
        config_dir=config_dir,
        queue_dir=run / "queue",
        log_path=log_path,
        maildir_root=maildir_root,
        domain=domain,
        sasl=dovecot is not None,
        catchall=dovecot is None,
    )


def master_pid(info: PostfixInfo) -> int | None:
    """The running master's pid from queue_directory/pid/master.pid, if any."""
    try:
        return int((info.queue_dir / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_until_ready(info: PostfixInfo, alive: Callable[[], bool] = lambda: True) -> None:
    """Block until smtpd greets with 220; show the log tail if it does not."""
    try:
        wait_for_greeting(info.host, info.smtp_port, b"220 ", alive=alive)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"postfix did not start: {exc}\n{log_tail(info.log_path)}") from exc


def _postfix(info: PostfixInfo, *args: str) -> list[str]:
    """argv of the postfix command for this instance."""
    return [POSTFIX, "-c", str(info.config_dir), *args]


def _stop_master(info: PostfixInfo, proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the master (it stops its children), then SIGKILL whatever is left.

    `postfix stop` would do the same but sleeps a whole second between checks. The master
    calls setsid() even in the foreground, so its children are in the master's process group,
    not in the group of `proc` (postfix-script).
    """
    pid = master_pid(info)
    if pid is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
    for group in (pid, proc.pid):
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def running_postfix(
    tmpdir: Path,
    dovecot: DovecotInfo | None = None,
    *,
    smtp_port: int | None = None,
) -> Iterator[PostfixInfo]:
    """Run a Postfix instance in the foreground (`postfix start-fg`) until the block exits.

    With `dovecot`, SMTP AUTH goes through its SASL socket and mail for its users is delivered
    into its maildirs. The log is `tmpdir/postfix.log`; the instance lives in `tmpdir/postfix`.
    """
    port = smtp_port or free_ports(1)[0]
    with reachable_dir(tmpdir, "postfix") as run:
        info = write_config(run, tmpdir / "postfix.log", port, dovecot)
        with (tmpdir / "postfix.stdout").open("wb") as stdout:  # the child keeps its own copy
            proc = subprocess.Popen(
                _postfix(info, "start-fg"),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no terminal signals (Ctrl-C) reach it mid-teardown
            )
        try:
            wait_until_ready(info, alive=lambda: proc.poll() is None)
            yield info
        finally:
            _stop_master(info, proc)


def start_daemon(info: PostfixInfo) -> None:
    """Start a written instance detached (`postfix start`), for the demo."""
    subprocess.run(_postfix(info, "start"), check=True)
    wait_until_ready(info)


def stop_daemon(config_dir: Path) -> None:
    """Stop a detached instance; quiet if it is not running."""
    subprocess.run(
        [POSTFIX, "-c", str(config_dir), "stop"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
