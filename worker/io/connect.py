"""Non-blocking outgoing connections (to the auth server, to a backend) on the worker loop."""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
from collections.abc import Callable

from mailgate.worker.io.loop import Loop, Timer

Target = tuple[str, int] | str  # (ip, port) or a unix socket path
OnConnected = Callable[[socket.socket | None, str], None]  # (socket, or None and the reason)


class Connector:
    """One connect attempt; calls ``on_done`` exactly once unless cancelled."""

    def __init__(self, loop: Loop, target: Target, timeout: float, on_done: OnConnected) -> None:
        self.loop = loop
        self.target = target
        self.on_done = on_done
        self.sock: socket.socket | None = None
        self._timer: Timer | None = None
        self._start(timeout)

    def cancel(self) -> None:
        """Forget the attempt and close its socket; ``on_done`` is not called."""
        self._cleanup(close=True)

    def _error(self, code: int) -> str:
        """nginx's words: ``connect() to 127.0.0.1:143 failed (111: Connection refused)``."""
        return f"connect() to {describe(self.target)} failed ({code}: {os.strerror(code)})"

    def _start(self, timeout: float) -> None:
        family = socket.AF_UNIX if isinstance(self.target, str) else _family(self.target[0])
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            # A backend's login reply must not wait for a delayed ACK (nginx's tcp_nodelay).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        code = sock.connect_ex(self.target)
        if code == 0:
            self.loop.call_later(0, lambda: self._finish(""))
            return
        if code not in (errno.EINPROGRESS, errno.EAGAIN):
            self.loop.call_later(0, lambda: self._finish(self._error(code)))
            return
        self.loop.selector.register(sock, selectors.EVENT_WRITE, self._writable)
        self._timer = self.loop.call_later(timeout, self._timed_out)

    def _writable(self, _mask: int) -> None:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._finish(self._error(code) if code else "")

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(self._error(errno.ETIMEDOUT))

    def _finish(self, error: str) -> None:
        sock = self.sock
        if sock is None:
            return  # cancelled meanwhile
        self._cleanup(close=bool(error))
        self.on_done(None if error else sock, error)

    def _cleanup(self, close: bool) -> None:
        if self._timer is not None:
            self.loop.cancel(self._timer)
            self._timer = None
        sock, self.sock = self.sock, None
        if sock is None:
            return
        with contextlib.suppress(KeyError, ValueError):  # finished before it was registered
            self.loop.selector.unregister(sock)
        if close:
            sock.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def describe(target: Target) -> str:
    """The target as nginx prints a peer: ``127.0.0.1:143``, ``[::1]:143``, ``unix:/p``."""
    if isinstance(target, str):
        return f"unix:{target}"
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
