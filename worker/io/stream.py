"""A non-blocking byte stream on the worker's loop: plain TCP, or TLS through pyOpenSSL.

The stream owns one socket and at most one ``SSL *``. It reads whenever reading is
enabled and hands every chunk to its handler; it queues writes and flushes them when the
socket is writable. TLS operations may want the other direction than the one they serve (a
read that must first write during a renegotiation, a handshake step), so interest in the
selector is recomputed from the stream's state after every step rather than set by callers.
"""

from __future__ import annotations

import _socket
import contextlib
import selectors
import socket
from collections.abc import Callable
from errno import errorcode
from typing import Any, NoReturn, Protocol

from OpenSSL import SSL

from mailgate.worker.io.loop import Loop
from mailgate.worker.tls import native

READ_CHUNK = 16384

# pyOpenSSL's own binding and its SSL_CTX accessor (privates, fenced in tls/native.py), looked
# up once here: the calls below stay one attribute lookup away, as with a direct import.
_ffi, _lib = native.pyopenssl_binding()
_context_cdata = native.context_cdata

# Hot path: the TLS steps call OpenSSL through pyOpenSSL's own binding (the same functions
# pyOpenSSL's methods call) and look at SSL_get_error() before raising anything. pyOpenSSL
# raises WantReadError for every handshake step and empty read, and allocates a fresh
# 16 KiB buffer for every recv(); those were a measurable share of a connection's Python time.
# Errors still go through pyOpenSSL (``native.raise_ssl_error``), so they read as before; only a
# read's reset is raised here, with pyOpenSSL's own SysCallError and wording.
_WANT_READ = _lib.SSL_ERROR_WANT_READ
_WANT_WRITE = _lib.SSL_ERROR_WANT_WRITE
_ZERO_RETURN = _lib.SSL_ERROR_ZERO_RETURN
_SYSCALL = _lib.SSL_ERROR_SYSCALL
# One buffer for every TLS read: the loop runs one callback at a time, and each read is
# copied out into bytes before the next.
_READ_BUFFER = _ffi.new("char[]", READ_CHUNK)
_BOTH_SHUTDOWN = SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN
_HOST_NAME = _lib.TLSEXT_NAMETYPE_host_name
# Version and cipher names are static strings inside OpenSSL: read once per process, by number.
_VERSION_NAMES: dict[int, str] = {}
_CIPHER_NAMES: dict[int, str] = {}
# What _send() returns when nothing was sent (the plain socket path raises BlockingIOError).
_BLOCKED_ON_WRITE = -1
_BLOCKED_ON_READ = -2
_FAILED = -3

# ``socket.socket.family`` converts to the AddressFamily enum on every read (about 1 µs, read
# two or three times per connection); the C attribute underneath is the same number as an int.
_RAW_FAMILY: Callable[[socket.socket], int] = _socket.socket.family.__get__


def socket_family(sock: socket.socket) -> int:
    """``sock.family`` as a plain int (compares equal to ``socket.AF_*``), without the enum."""
    return _RAW_FAMILY(sock)


class StreamHandler(Protocol):
    """What a stream reports to its owner (a session, or one side of a relay)."""

    def data_received(self, data: bytes) -> None:
        """Bytes arrived (already decrypted under TLS)."""

    def eof_received(self) -> None:
        """The peer finished sending (FIN, close_notify, or a TLS peer that just dropped)."""

    def connection_lost(self, reason: str) -> None:
        """The stream failed (reset, TLS error); it is already closed."""

    def tls_established(self) -> None:
        """The TLS handshake completed; application data may flow."""

    def write_drained(self) -> None:
        """The write buffer became empty (the hook for back-pressure)."""


class _Detached:
    """The handler of a closed stream: its owner asked for the close and hears nothing more."""

    def data_received(self, data: bytes) -> None:
        """Nobody listens any more."""

    def eof_received(self) -> None:
        """Nobody listens any more."""

    def connection_lost(self, reason: str) -> None:
        """Nobody listens any more."""

    def tls_established(self) -> None:
        """Nobody listens any more."""

    def write_drained(self) -> None:
        """Nobody listens any more."""


_DETACHED = _Detached()


class Stream:
    """One socket on the loop, with a write buffer and an optional TLS layer."""

    def __init__(self, loop: Loop, sock: socket.socket, handler: StreamHandler) -> None:
        self.loop = loop
        self.sock = sock
        self.handler = handler
        self._ssl: Any = None  # the SSL * (cryptography's cdata), once TLS starts
        self._ctx: SSL.Context | None = None
        self._conn: SSL.Connection | None = None  # pyOpenSSL's view of _ssl, made on demand
        self._failure = ""  # why the last _send() returned _FAILED
        self.closed = False
        self.bytes_in = 0
        self.bytes_out = 0
        self._out = bytearray()
        self._reading = True
        self._handshaking = False
        self._eof = False
        self._shutdown_after_flush = False
        self._tls_after_flush: SSL.Context | None = None
        self._close_after_flush = False
        self._tls_wants_write = False  # a TLS read or handshake is blocked on writability
        self._tls_wants_read = False  # a TLS write is blocked on readability
        self._mask = 0
        if sock.gettimeout() != 0.0:  # the worker made accepted sockets non-blocking already
            sock.setblocking(False)
        self._update_interest()

    @property
    def write_buffer_size(self) -> int:
        return len(self._out)

    @property
    def tls(self) -> SSL.Connection | None:
        """pyOpenSSL's ``Connection`` on this stream's TLS, for what is read once per login
        (certificates, ALPN); None on plain TCP. The per-connection path never needs it."""
        if self._conn is None and self._ssl is not None:
            assert self._ctx is not None
            self._conn = native.connection(self._ssl, self._ctx, self.sock)
        return self._conn

    @property
    def tls_version(self) -> str:
        """``SSL_get_version()``: "TLSv1.2", "TLSv1.3"."""
        number = _lib.SSL_version(self._ssl)
        name = _VERSION_NAMES.get(number)
        if name is None:
            name = _VERSION_NAMES[number] = _ffi.string(_lib.SSL_get_version(self._ssl)).decode()
        return name

    @property
    def tls_cipher(self) -> str | None:
        """The negotiated cipher's OpenSSL name; None before one is chosen."""
        cipher = _lib.SSL_get_current_cipher(self._ssl)
        if cipher == _ffi.NULL:
            return None
        number = _lib.SSL_CIPHER_get_id(cipher)
        name = _CIPHER_NAMES.get(number)
        if name is None:
            name = _CIPHER_NAMES[number] = _ffi.string(_lib.SSL_CIPHER_get_name(cipher)).decode()
        return name

    @property
    def tls_resumed(self) -> bool:
        """The handshake resumed a session (by ID or ticket)."""
        return bool(_lib.SSL_session_reused(self._ssl))

    @property
    def tls_server_name(self) -> bytes | None:
        """The SNI host name the client sent, if any."""
        name = _lib.SSL_get_servername(self._ssl, _HOST_NAME)
        return None if name == _ffi.NULL else _ffi.string(name)

    def start_tls(self, ctx: SSL.Context) -> None:
        """Begin a server-side handshake once queued plaintext (a STARTTLS reply) is sent;
        :meth:`StreamHandler.tls_established` follows."""
        if self._out:
            self._tls_after_flush = ctx
            self._update_interest()
            return
        # The SSL * is made here rather than by pyOpenSSL's Connection, whose constructor
        # (mode, weak reverse mapping, fd lookup) was a visible share of a resumption's
        # Python time; ``tls`` builds that object later for the few callers that want it.
        ssl = _lib.SSL_new(_context_cdata(ctx))
        if ssl == _ffi.NULL:
            raise MemoryError("SSL_new() failed")
        self._ssl = _ffi.gc(ssl, _lib.SSL_free)
        self._ctx = ctx
        _lib.SSL_set_fd(ssl, self.sock.fileno())
        _lib.SSL_set_accept_state(ssl)
        self._handshaking = True
        self._handshake()

    def write(self, data: bytes) -> None:
        """Queue ``data`` and try to send it now."""
        if self.closed or not data:
            return
        self._out += data
        if not self._handshaking:
            self._flush()
        self._update_interest()

    def close_after_flush(self) -> None:
        """Close once everything queued is sent (a final error line, a BYE)."""
        self._reading = False
        if not self._out:
            self.close()
            return
        self._close_after_flush = True
        self._update_interest()

    def shutdown_write(self) -> None:
        """Half-close once everything queued is sent: FIN on plain TCP, close_notify on TLS."""
        self._shutdown_after_flush = True
        if not self._out:
            self._shutdown_write_now()

    def pause_reading(self) -> None:
        self._reading = False
        self._update_interest()

    def resume_reading(self) -> None:
        self._reading = True
        self._update_interest()
        # Records already decrypted inside OpenSSL never make the socket readable again.
        if self._ssl is not None and not self._handshaking and self._tls_buffered():
            self.loop.call_later(0, self._read)

    def set_handler(self, handler: StreamHandler) -> None:
        """Send this stream's events to ``handler`` from now on: the relay takes over both
        streams after the login. A closed stream stays detached: its owner hears nothing more."""
        if not self.closed:
            self.handler = handler

    def close(self) -> None:
        """Close now, without blocking. A TLS session stays resumable (see below)."""
        if self.closed:
            return
        self.closed = True
        if self._mask:
            self.loop.selector.forget(self.sock)  # closed below
            self._mask = 0
        if self._ssl is not None:
            # One non-blocking attempt to send close_notify; a failure leaves errors queued
            # that must not be read as the next connection's.
            if _lib.SSL_shutdown(self._ssl) < 0:
                _lib.ERR_clear_error()
            # Freeing an SSL that was never shut down marks its session not resumable, and
            # real mail clients mostly just drop the TCP connection.
            _lib.SSL_set_shutdown(self._ssl, _BOTH_SHUTDOWN)
        self.sock.close()
        # The owner holds the stream and the stream its owner: dropping this side lets both be
        # freed as soon as the owner lets go, instead of by the cyclic garbage collector.
        self.handler = _DETACHED

    # -- readiness ---------------------------------------------------------------------------

    def _on_ready(self, mask: int) -> None:
        # _handshake() and _read() end by updating the interest themselves.
        if self._handshaking:
            self._handshake()
            return
        if mask & selectors.EVENT_WRITE or self._tls_wants_read:
            self._flush()
        if not self.closed and (mask & selectors.EVENT_READ or self._tls_wants_write):
            self._read()
        else:
            self._update_interest()

    def _update_interest(self) -> None:
        if self.closed:
            return
        mask = 0
        if self._handshaking:
            mask = selectors.EVENT_WRITE if self._tls_wants_write else selectors.EVENT_READ
        else:
            reading = self._reading and not self._eof and self._tls_after_flush is None
            if reading or self._tls_wants_read:
                mask |= selectors.EVENT_READ
            if self._out or self._tls_wants_write:
                mask |= selectors.EVENT_WRITE
        if mask == self._mask:
            return
        if not mask:
            self.loop.selector.unregister(self.sock)
        elif not self._mask:
            self.loop.selector.register(self.sock, mask, self._on_ready)
        else:
            self.loop.selector.modify(self.sock, mask, self._on_ready)
        self._mask = mask

    # -- TLS handshake ---------------------------------------------------------------------

    def _handshake(self) -> None:
        result = _lib.SSL_do_handshake(self._ssl)
        if result != 1:
            errno = _ffi.errno
            code = _lib.SSL_get_error(self._ssl, result)
            if code not in (_WANT_READ, _WANT_WRITE):
                reason = self._error_text(result, code, errno)
                self._fail(f"SSL_do_handshake() failed ({reason})")
                return
            self._tls_wants_write = code == _WANT_WRITE
        else:
            self._handshaking = False
            self._tls_wants_write = False
            self.handler.tls_established()
            if not self.closed and self._out:
                self._flush()
        self._update_interest()

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> None:
        self._tls_wants_write = False
        while self._reading and not self.closed and not self._eof:
            try:
                data = self._recv()
            except BlockingIOError:
                break
            except SSL.WantWriteError:
                self._tls_wants_write = True
                break
            except SSL.SysCallError as err:
                self._fail(f"SSL_read() failed ({_describe(err)})")
                return
            except (SSL.Error, OSError) as err:
                self._fail(f"recv() failed ({_describe(err)})")
                return
            if data is None:
                break  # TLS wants more records first
            if not data:
                self._eof = True
                self.handler.eof_received()
                break
            self.bytes_in += len(data)
            self.handler.data_received(data)
            if len(data) < READ_CHUNK and (self._ssl is None or not self._tls_buffered()):
                # Drained for now: epoll is level-triggered and will say when more arrives,
                # which saves a recv() that could only fail with EAGAIN (an exception here).
                break
        self._update_interest()

    def _tls_buffered(self) -> bool:
        """OpenSSL holds bytes the socket will not report again: decrypted plaintext, or
        records read ahead but not yet processed."""
        return native.has_pending()(self._ssl)

    def _recv(self) -> bytes | None:
        """The next chunk; b"" at the end of the stream; None when TLS must wait for more
        records. Only a real failure raises (pyOpenSSL's exception for it)."""
        if self._ssl is None:
            return self.sock.recv(READ_CHUNK)
        result = _lib.SSL_read(self._ssl, _READ_BUFFER, READ_CHUNK)
        if result > 0:
            return bytes(_ffi.buffer(_READ_BUFFER, result))
        # Every connection ends here once, so its usual ends are told apart without raising:
        # close_notify, a TCP close (SSL_OP_IGNORE_UNEXPECTED_EOF makes it ZERO_RETURN), and a
        # reset from a client that closed with our greeting unread.
        errno = _ffi.errno
        code = _lib.SSL_get_error(self._ssl, result)
        if code == _WANT_READ:
            return None
        if code == _ZERO_RETURN:
            return b""
        if code == _SYSCALL and not _lib.ERR_peek_error():
            # pyOpenSSL's reading of it: an errno is a failure, anything else the peer's EOF.
            if result < 0 and errno:
                raise SSL.SysCallError(errno, errorcode.get(errno))
            return b""  # EOF without close_notify
        if code == _WANT_WRITE:
            raise SSL.WantWriteError()
        self._raise_error(result)

    # -- writing ---------------------------------------------------------------------------

    def _flush(self) -> None:
        self._tls_wants_read = False
        while self._out and not self.closed:
            sent = self._send(memoryview(self._out)[:READ_CHUNK])
            if sent < 0:
                if sent == _FAILED:
                    self._fail(f"send() failed ({self._failure})")
                    return
                self._tls_wants_read = sent == _BLOCKED_ON_READ
                break
            del self._out[:sent]
            self.bytes_out += sent
        if not self._out and not self.closed:
            if self._close_after_flush:
                self.close()
                return
            if self._tls_after_flush is not None:
                ctx, self._tls_after_flush = self._tls_after_flush, None
                self.start_tls(ctx)
                return
            if self._shutdown_after_flush:
                self._shutdown_write_now()
            self.handler.write_drained()

    def _shutdown_write_now(self) -> None:
        self._shutdown_after_flush = False
        if self.closed:
            return
        # A failure means the peer is gone already; the read side will report it.
        if self._ssl is not None:
            if _lib.SSL_shutdown(self._ssl) < 0:
                _lib.ERR_clear_error()  # not to be read as a later call's error
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def _send(self, chunk: memoryview) -> int:
        """Bytes sent (> 0), or why none were: ``_BLOCKED_ON_WRITE``, ``_BLOCKED_ON_READ``
        (TLS), ``_FAILED`` with the reason in ``_failure``. Returns rather than raises: a
        client that hangs up before our greeting ends here on every such connection."""
        if self._ssl is None:
            try:
                return self.sock.send(chunk)
            except BlockingIOError:
                return _BLOCKED_ON_WRITE
            except OSError as err:
                self._failure = _describe(err)
                return _FAILED
        with _ffi.from_buffer(chunk) as data:
            result = _lib.SSL_write(self._ssl, data, len(chunk))
        if result > 0:
            return int(result)
        errno = _ffi.errno
        code = _lib.SSL_get_error(self._ssl, result)
        if code == _WANT_WRITE:
            return _BLOCKED_ON_WRITE
        if code == _WANT_READ:
            return _BLOCKED_ON_READ
        self._failure = self._error_text(result, code, errno)
        return _FAILED

    def _error_text(self, result: int, code: int, errno: int) -> str:
        """Why a TLS call failed (``code`` from ``SSL_get_error()``, ``errno`` read right after
        the call), worded as ``_describe`` words pyOpenSSL's exception for it."""
        if code == _SYSCALL and not _lib.ERR_peek_error():
            if result < 0 and errno:
                return f"{errno}: {errorcode.get(errno)}"
            return "-1: Unexpected EOF"
        try:
            self._raise_error(result)
        except (SSL.Error, OSError) as err:
            return _describe(err)

    def _raise_error(self, result: int) -> NoReturn:
        """pyOpenSSL's own exception for a TLS call's failure (the error queue or errno)."""
        conn = self.tls
        assert conn is not None
        native.raise_ssl_error(conn, self._ssl, result)
        # SSL_ERROR_NONE on a call that returned <= 0: OpenSSL never does that.
        raise SSL.Error(f"TLS call returned {result} without an error")

    def _fail(self, reason: str) -> None:
        handler = self.handler
        self.close()
        handler.connection_lost(reason)


def _describe(err: BaseException) -> str:
    """An OpenSSL error queue or errno as one line, as nginx prints them."""
    if isinstance(err, SSL.SysCallError) and len(err.args) == 2:
        return f"{err.args[0]}: {err.args[1]}"
    if isinstance(err, SSL.Error) and err.args and isinstance(err.args[0], list):
        reasons = [reason for _lib, _func, reason in err.args[0] if reason]
        return "SSL: " + ("; ".join(reasons) or "unknown error")
    if isinstance(err, OSError) and err.errno is not None:
        return f"{err.errno}: {err.strerror}"
    return str(err) or type(err).__name__
