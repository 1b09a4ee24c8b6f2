"""Clients for byte-exact replies: a line client, curl, ``openssl s_client``; test messages."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # gateway.py imports this module for Gateway.connect()
    from tests.support.gateway import Gateway


class LineClient:
    """A raw TCP (or TLS) client that sends bytes and reads CRLF-terminated lines."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 5.0):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock: socket.socket = sock
        if tls is not None:
            self.sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.buffer = b""

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self) -> bytes:
        """The next line with its CRLF (or what came before EOF)."""
        while b"\n" not in self.buffer:
            if not self._fill():
                data, self.buffer = self.buffer, b""
                return data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def lines_until(self, last: Callable[[bytes], bool]) -> bytes:
        """Lines up to and including the first for which ``last(line)`` holds."""
        data = b""
        while True:
            line = self.line()
            data += line
            if not line or last(line):
                return data

    def ask(self, command: bytes, last: Callable[[bytes], bool] | None = None) -> bytes:
        """Send ``command`` plus CRLF; return one reply line, or lines up to ``last``."""
        self.send(command + b"\r\n")
        return self.line() if last is None else self.lines_until(last)

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (all buffered data discarded)."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except (ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False
        return True

    def starttls(self, tls: ssl.SSLContext) -> None:
        assert not self.buffer, f"bytes after the STARTTLS reply: {self.buffer!r}"
        self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")


def make_message(subject: str, sender: str = "test@example.test") -> bytes:
    """A small RFC 5322 message with a unique ``subject`` to look for."""
    return f"From: {sender}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


def unique(prefix: str) -> str:
    """A subject or name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_curl(gateway: Gateway, url: str, *args: str) -> str:
    """``curl URL`` trusting the gateway's CA; fails the test on a non-zero exit."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(gateway.ca), *args, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_s_client(gateway: Gateway, protocol: str, port: str, commands: bytes) -> bytes:
    """``openssl s_client -starttls PROTOCOL``: what the server said after TLS began.

    ``commands`` are LF-separated lines (``-crlf`` sends them with CRLF); ``-ign_eof`` keeps the
    client reading until the server closes, so the last command should end the session.
    """
    argv = ["openssl", "s_client", "-starttls", protocol, "-connect", f"127.0.0.1:{port}"]
    argv += ["-CAfile", str(gateway.ca), "-verify_return_error", "-crlf", "-quiet", "-ign_eof"]
    result = subprocess.run(argv, input=commands, capture_output=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def s_client_argv(gateway: Gateway, port: str, *options: str) -> list[str]:
    """``openssl s_client`` on the gateway's port ``port``, verifying it against its CA."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{gateway.port(port)}"]
    return [*argv, "-CAfile", str(gateway.ca), "-verify_return_error", *options]


def read_until(proc: subprocess.Popen[bytes], wanted: bytes, timeout: float = 10.0) -> bytes:
    """Read the process's stdout until ``wanted`` appears (or EOF, or the timeout)."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while wanted not in data and (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data


def summary(output: str) -> str:
    """s_client's ``New, TLSv1.3, Cipher is ...`` / ``Reused, ...`` line."""
    return next(line for line in output.splitlines() if line.startswith(("New,", "Reused,")))
