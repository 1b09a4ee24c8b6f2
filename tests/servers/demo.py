"""Demo backends for `make run`: Dovecot and Postfix in the background on fixed loopback ports.

    .venv/bin/python tests/servers/demo.py start DIR   # (re)start, print the ports
    .venv/bin/python tests/servers/demo.py stop DIR    # stop both; quiet if not running

User `demo`, password `demo`, with one welcome message in INBOX. DIR keeps the configs, the
maildirs and the logs (dovecot.log, postfix.log); it must be reachable by other users (the
servers' unprivileged processes work in it), e.g. /tmp/mailgate-demo.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

# Run as a script, so tests/servers is sys.path[0]; the helpers import as `tests.servers.*`.
# mailgate itself is never imported here, so the repo root on sys.path shadows nothing we use.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.servers import dovecot, postfix
from tests.servers.files import reachable_by_others
from tests.servers.ports import LOOPBACK

IMAP_PORT = 11143
POP3_PORT = 11110
SMTP_PORT = 11025
USERS = {"demo": "demo"}
WELCOME = b"""\
From: mailgate demo <postmaster@example.test>
To: demo@example.test
Subject: Welcome to the mailgate demo

This message was read from Dovecot through mailgate.
"""


def _port_is_free(port: int) -> bool:
    """True unless something listens on the port (TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _busy_ports(*ports: int, grace: float = 5.0) -> list[int]:
    """Ports still taken after `grace` seconds (a server just stopped may still be exiting)."""
    deadline = time.monotonic() + grace
    while True:
        busy = [port for port in ports if not _port_is_free(port)]
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.1)


def start(root: Path) -> None:
    """Stop any previous demo in `root`, then write the configs and start both servers."""
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    if not reachable_by_others(root):
        sys.exit(f"{root}: users nobody/postfix/dovecot cannot reach it; pick another DIR")
    stop(root)
    busy = _busy_ports(IMAP_PORT, POP3_PORT, SMTP_PORT)
    if busy:
        sys.exit(f"ports {busy} on {LOOPBACK} are taken; is another demo running?")
    (root / "dovecot").mkdir(exist_ok=True)
    (root / "postfix").mkdir(exist_ok=True)
    mail = dovecot.write_config(root / "dovecot", root / "dovecot.log", USERS, IMAP_PORT, POP3_PORT)
    if not dovecot.read_maildir(mail.maildir("demo")):  # a restart keeps the mailbox as it was
        mail.add_message("demo", WELCOME)
    dovecot.start_daemon(mail)
    smtp = postfix.write_config(root / "postfix", root / "postfix.log", SMTP_PORT, mail)
    postfix.start_daemon(smtp)
    print(f"demo backends running, files and logs in {root}")
    print(
        f"  IMAP {LOOPBACK}:{IMAP_PORT}  POP3 {LOOPBACK}:{POP3_PORT}  SMTP {LOOPBACK}:{SMTP_PORT}"
    )
    print("  user demo, password demo; SMTP takes XCLIENT from 127.0.0.0/8 and delivers")
    print("  demo@example.test into the same INBOX")
    print(f"  stop: .venv/bin/python tests/servers/demo.py stop {root}")


def stop(root: Path) -> None:
    """Stop both servers of the demo in `root`; quiet if they are not running."""
    root = root.resolve()
    if (root / "postfix" / "etc" / "main.cf").exists():
        postfix.stop_daemon(root / "postfix" / "etc")
    if (root / "dovecot" / "dovecot.conf").exists():
        dovecot.stop_daemon(root / "dovecot" / "dovecot.conf")


def main(argv: list[str] | None = None) -> None:
    """Parse `start|stop DIR` and run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.action == "start":
        start(args.dir)
    else:
        stop(args.dir)


if __name__ == "__main__":
    main()
