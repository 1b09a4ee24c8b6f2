"""Small in-test servers: a recording IMAP backend, and peers that never answer.

``RecordingImapBackend`` is what a mailbox server behind ``proxy_protocol on|v2`` sees: it reads
the PROXY header the proxy sends first, keeps it, then speaks just enough IMAP for the proxy's
backend login (greeting, ``LOGIN`` with synchronizing literals answered by ``+``, a tagged OK).
``silent_tcp`` accepts connections and never says a word (an auth server that hangs);
``silent_udp`` swallows datagrams (a DNS server that never answers).
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
from collections.abc import Iterator

from tests.servers.ports import LOOPBACK

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class RecordingImapBackend:
    """Accepts any login; ``preambles`` holds each connection's PROXY header (b"" without)."""

    def __init__(self, *, proxy_protocol: bool = True) -> None:
        self.proxy_protocol = proxy_protocol
        self.preambles: list[bytes] = []
        self.commands: list[bytes] = []
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _addr = self.listener.accept()
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream, contextlib.suppress(OSError):
            self.preambles.append(read_proxy_header(stream) if self.proxy_protocol else b"")
            self._session(stream)

    def _session(self, stream: io.BufferedIOBase) -> None:
        stream.write(b"* OK fake IMAP ready\r\n")
        stream.flush()
        tag = b""
        while line := stream.readline():
            self.commands.append(line.rstrip(b"\r\n"))
            tag = tag or line.split(b" ", 1)[0]
            if line.rstrip().endswith(b"}"):  # a synchronizing literal: ask for it, read it
                size = int(line.rstrip()[:-1].rsplit(b"{", 1)[1])
                stream.write(b"+ go ahead\r\n")
                stream.flush()
                stream.read(size)
                continue  # the rest of the line still belongs to the same command
            if line.rstrip().upper().endswith(b" LOGOUT"):
                stream.write(b"* BYE fake\r\n" + tag + b" OK LOGOUT completed\r\n")
                stream.flush()
                return
            stream.write(tag + b" OK done\r\n")
            stream.flush()
            tag = b""

    def close(self) -> None:
        self.listener.close()


def read_proxy_header(stream: io.BufferedIOBase) -> bytes:
    """Exactly one PROXY header (v1 line or v2 binary block) from the start of ``stream``."""
    start = stream.read(len(V2_SIGNATURE))
    if start != V2_SIGNATURE:
        return start + stream.readline()  # v1 ends at its LF; its shortest form is 15 bytes
    fixed = stream.read(4)
    (length,) = struct.unpack("!H", fixed[2:])
    return start + fixed + stream.read(length)


@contextlib.contextmanager
def silent_tcp() -> Iterator[int]:
    """A loopback port that accepts TCP connections (in the kernel) and never answers."""
    with socket.create_server((LOOPBACK, 0), backlog=64) as listener:
        yield listener.getsockname()[1]


@contextlib.contextmanager
def silent_udp() -> Iterator[int]:
    """A loopback UDP port that receives datagrams and never answers (a dead DNS server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]
