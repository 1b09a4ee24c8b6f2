"""A worker process: accepts connections on every listener and hands each to a handler.

``Worker.__init__`` runs in the master before ``fork()`` and only stores what it is given;
``init_process()`` runs in the child and makes it a worker (signals, RNG, limits, user, title);
``run()`` is the event loop. Signal handlers only queue the signal (the wakeup pipe ends the
wait); the loop acts on them, as nginx's worker acts on its ``ngx_quit``/``ngx_terminate`` flags.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import grp
import os
import pwd
import random
import resource
import selectors
import signal
import socket
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import setproctitle

from mailgate.config import core, model
from mailgate.worker.io.loop import Loop, drain
from mailgate.worker.io.stream import socket_family
from mailgate.worker.observe import batching
from mailgate.worker.observe import metrics as worker_metrics
from mailgate.worker.session.factory import SessionFactory

if TYPE_CHECKING:  # at run time the master builds them after native.check() (cli.Paths.build)
    from mailgate.worker.tls.context import Contexts

BOOT_ERROR = 3  # exit code telling the master not to respawn (gunicorn's WORKER_BOOT_ERROR)
# Accepts per readiness event with ``multi_accept on``, so one busy listener cannot starve the
# rest. With the default ``off`` (nginx's), one: a second accept() would mostly fail with EAGAIN
# (a system call and an exception per connection), and epoll reports a backlog again anyway.
ACCEPT_BATCH = 64
ACCEPT_PAUSE = 0.5  # seconds a listener rests after EMFILE/ENFILE (nginx: 500 ms)
TITLE = "mailgate: worker process"
TITLE_SHUTTING_DOWN = "mailgate: worker process is shutting down"

# What a worker does on each signal, worded for the "signal N (SIGX) received, ..." notice.
SIGNAL_ACTIONS: dict[signal.Signals, str] = {
    signal.SIGQUIT: "shutting down",
    signal.SIGTERM: "exiting",
    signal.SIGINT: "exiting",
    signal.SIGUSR1: "reopening logs",
    signal.SIGHUP: "ignoring",
    signal.SIGUSR2: "ignoring",
    signal.SIGWINCH: "ignoring",
}
_INHERITED_SIGNALS = (*SIGNAL_ACTIONS, signal.SIGCHLD)
_RETRY_ACCEPT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Log(Protocol):
    """The error log as a worker uses it (the master's ``ErrorLog`` fits)."""

    def emerg(self, message: str) -> None: ...
    def alert(self, message: str) -> None: ...
    def crit(self, message: str) -> None: ...
    def error(self, message: str) -> None: ...
    def notice(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def reopen(self) -> object: ...


class ServerLog(Log, Protocol):
    """A server's own error log: its reopen failures are reported in the main log (nginx)."""

    def reopen(self, owner: int | None = None, *, report: bool = True) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Listening:
    """A bound, listening socket with the ``listen`` and ``server {}`` it belongs to."""

    sock: socket.socket
    listen: model.Listen
    server: model.ServerConfig


# The peer address as ``accept()`` returns it: ``(host, port, ...)`` for TCP, a path (often
# empty) for a UNIX socket.
Peer = Any


class ConnectionHandler(Protocol):
    """What a worker needs of its connection handler (mail's is ``SessionFactory``).

    Declared here, by the worker that calls it, so the worker depends on no session class.
    """

    def __call__(
        self,
        sock: socket.socket,
        peer: Peer,
        listen: model.Listen,
        server: model.ServerConfig,
        loop: Loop,
    ) -> None:
        """Take over an accepted, non-blocking socket. A connection that outlives the call
        registers its sockets in ``loop.selector`` and calls ``loop.track(self)``."""

    def open_logs(self) -> None:
        """Open the handler's own log files: in a new worker, before it drops privileges."""

    def reopen(self) -> None:
        """USR1: reopen the handler's own log files."""


def accept(listener: socket.socket) -> tuple[socket.socket, Peer]:
    """``listener.accept()`` without its per-call enum conversions of family and type.

    ``socket.accept`` builds the new socket from ``self.family`` and ``self.type``, each an
    enum conversion in Python; a listener's are fixed, and the C attribute is a plain int.
    The peer address comes with it, so nobody needs to ask ``getpeername()`` again.
    """
    fd, addr = listener._accept()  # type: ignore[attr-defined]
    return socket.socket(socket_family(listener), socket.SOCK_STREAM, 0, fileno=fd), addr


def _lacks_nodelay(listener: socket.socket) -> bool:
    """A TCP listener whose accepted sockets will not have TCP_NODELAY on by themselves."""
    if socket_family(listener) == socket.AF_UNIX:
        return False
    try:
        return not listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    except OSError:
        return True


def group_exists(name: str) -> bool:
    """Whether the system knows group ``name`` (for the default worker group)."""
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


class WorkerBootError(Exception):
    """The worker cannot become a worker (user, group); the master must not respawn it."""


def worker_ids(main: model.MainConfig) -> tuple[str, int, int] | None:
    """``(user name, uid, gid)`` the workers run as, or None when they keep the master's.

    ``user``, or nobody when the master is root (:func:`mailgate.config.core.worker_user`);
    what the master hands files to, if it must (log files on reopen, as nginx).
    Raises :class:`WorkerBootError` when the user or group does not exist.
    """
    wanted = core.worker_user(main.user, os.geteuid(), group_exists)
    if wanted is None:
        return None
    user, group = wanted
    try:
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group or user).gr_gid
    except KeyError as err:
        raise WorkerBootError(f'getpwnam/getgrnam("{err.args[0]}") failed') from err
    return user, uid, gid


class Worker:
    """One worker process of one configuration generation."""

    def __init__(
        self,
        config: model.Config,
        listeners: Sequence[Listening],
        log: Log,
        contexts: Contexts | None = None,
        handler: ConnectionHandler | None = None,
        *,
        server_logs: Mapping[int, ServerLog] | None = None,
    ) -> None:
        """Store what the worker needs; runs in the master, so it touches no process state.

        ``server_logs``: the error log of each server that has its own, by index into
        ``config.servers`` (opened by the master; the others log to ``log``)."""
        self.config = config
        self.listeners = list(listeners)
        self.log = log
        if contexts is None:  # no TLS (tests of the process alone); imported late, see above
            from mailgate.worker.tls.context import Contexts

            contexts = Contexts(config.servers, {})
        self.contexts = contexts
        self.server_logs = dict(server_logs or {})
        # A listener's own messages (accept() failures, worker_connections) go to its
        # server's log, as nginx's listening socket logs through the server's error_log.
        self._listener_logs: dict[int, Log] = {
            id(server): self.server_logs[index]
            for index, server in enumerate(config.servers)
            if index in self.server_logs
        }
        # The mail session is the handler; tests of the process alone may pass another.
        self.handler: ConnectionHandler = handler or SessionFactory(
            config, log, self.contexts, server_logs=self.server_logs
        )
        self.loop = Loop(on_error=self._callback_failed)
        self.quitting = False
        self._accept_batch = ACCEPT_BATCH if config.main.multi_accept else 1
        self.terminating = False
        self._signals: collections.deque[int] = collections.deque()
        self._wakeup_r = -1
        self._last_connections_alert = 0.0

    def init_process(self, single: bool = False) -> None:
        """Turn the forked child into a worker: signals, RNG, rlimit, user, title.

        ``single`` is ``master_process off``: the master itself runs the loop, keeps its
        user and its title. Raises :class:`WorkerBootError` if the user cannot be set.
        """
        self._install_signals()
        # The child shares the parent's RNG state; reseed so workers do not repeat each other.
        random.seed()
        self._set_rlimit_nofile()
        worker_metrics.process_started()
        batching.defer_writes()  # flushed from run(), see batching.flush_due
        self.handler.open_logs()  # as root, before the user drop, like nginx's log files
        if single:
            return
        self._drop_privileges()
        setproctitle.setproctitle(TITLE)

    def _callback_failed(self, err: Exception, owner: object) -> None:
        """A bug surfaced in one connection's callback: log it with its traceback and close
        that connection (and the session that owns its stream), so the worker and its other
        sessions go on."""
        trace = "".join(traceback.format_exception(err)).rstrip()
        self.log.alert(f"unexpected error in a connection callback, closing it: {trace}")
        for target in (getattr(owner, "handler", None), owner):
            close = getattr(target, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()

    def run(self) -> int:
        """Accept until told to stop; returns the exit code (0)."""
        self.loop.selector.register(self._wakeup_r, selectors.EVENT_READ, self._drain_wakeup)
        for listening in self.listeners:
            self._watch(listening)
        try:
            while True:
                self._dispatch_signals()
                if self._finished():
                    break
                # At most 1 s per turn, so deferred metrics reach the files within ~2 s.
                self.loop.run_once(max_wait=1.0)
                batching.flush_due()
        finally:
            batching.flush()  # what this worker counted must outlive it
        self._close_listeners()
        return 0

    def shutdown(self) -> None:
        """Graceful stop (QUIT): stop accepting, finish the open connections, then exit.

        ``worker_shutdown_timeout`` bounds the wait; when it fires every connection is closed.
        """
        if self.quitting:
            return
        self.quitting = True
        self.log.notice("gracefully shutting down")
        setproctitle.setproctitle(TITLE_SHUTTING_DOWN)
        self._close_listeners()
        timeout = self.config.main.worker_shutdown_timeout
        if timeout is not None:
            self.loop.call_later(timeout, self._shutdown_timed_out)

    # -- signals -------------------------------------------------------------------------

    def _install_signals(self) -> None:
        # Handlers inherited from the master would queue into the master's data structures.
        for signo in _INHERITED_SIGNALS:
            signal.signal(signo, signal.SIG_DFL)
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_r = read_end
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for signo in SIGNAL_ACTIONS:
            signal.signal(signo, self._queue_signal)

    def _queue_signal(self, signo: int, frame: FrameType | None) -> None:
        # Runs between bytecodes: record only, no logging, no I/O (style rule 1).
        self._signals.append(signo)

    def _drain_wakeup(self, mask: int) -> None:
        drain(self._wakeup_r)

    def _dispatch_signals(self) -> None:
        while self._signals:
            signo = signal.Signals(self._signals.popleft())
            doing = SIGNAL_ACTIONS[signo]
            self.log.notice(f"signal {int(signo)} ({signo.name}) received, {doing}")
            if signo == signal.SIGQUIT:
                self.shutdown()
            elif signo in (signal.SIGTERM, signal.SIGINT):
                self.terminating = True
            elif signo == signal.SIGUSR1:
                self.log.reopen()
                # Servers sharing their mail {} level's log share one object: reopen it once.
                for server_log in {id(log): log for log in self.server_logs.values()}.values():
                    for failure in server_log.reopen(report=False):
                        self.log.alert(failure)
                self.handler.reopen()

    def _finished(self) -> bool:
        return self.terminating or (self.quitting and not self.loop.connections)

    # -- process setup -------------------------------------------------------------------

    def _set_rlimit_nofile(self) -> None:
        limit = self.config.main.worker_rlimit_nofile
        if limit is None:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        except (OSError, ValueError) as err:
            self.log.alert(f"setrlimit(RLIMIT_NOFILE, {limit}) failed ({err})")

    def _drop_privileges(self) -> None:
        # Before run(): a worker never accepts a connection with the master's privileges.
        ids = worker_ids(self.config.main)
        if ids is None:
            return
        user, uid, gid = ids
        try:
            os.setgid(gid)
            os.initgroups(user, gid)
            os.setuid(uid)
        except OSError as err:
            raise WorkerBootError(f'setuid/setgid to "{user}" failed ({err})') from err

    # -- accepting -----------------------------------------------------------------------

    def _watch(self, listening: Listening) -> None:
        # The master turns TCP_NODELAY on in its TCP listeners and Linux copies it into every
        # accepted socket; a listener without it (another binary's) costs a call per accept.
        nodelay = _lacks_nodelay(listening.sock)

        def ready(mask: int) -> None:
            self._accept(listening, nodelay)

        # Not EPOLLEXCLUSIVE (which nginx uses): it wakes the worker that waited last, so an
        # idle worker takes every connection of a light load while the others sit unused.
        self.loop.selector.register(listening.sock, selectors.EVENT_READ, ready)

    def _accept(self, listening: Listening, nodelay: bool) -> None:
        for _ in range(self._accept_batch):
            try:
                sock, peer = accept(listening.sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in _RETRY_ACCEPT:
                    continue
                self._accept_failed(listening, err)
                return
            if nodelay:
                # Without it the greeting after a handshake waits for the client's delayed
                # ACK (about 40 ms), as it does behind nginx. A socket that refuses it (the
                # listener did too) still works, only slower.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._admit(sock, peer, listening)

    def _listener_log(self, listening: Listening) -> Log:
        return self._listener_logs.get(id(listening.server), self.log)

    def _accept_failed(self, listening: Listening, err: OSError) -> None:
        self._listener_log(listening).alert(f"accept4() failed ({err.errno}: {err.strerror})")
        if err.errno in _OUT_OF_FDS:
            # The backlog stays readable, so keep watching it and we would spin; rest instead.
            self.loop.selector.unregister(listening.sock)
            self.loop.call_later(ACCEPT_PAUSE, lambda: self._resume(listening))

    def _resume(self, listening: Listening) -> None:
        if not self.quitting:
            self._watch(listening)

    def _admit(self, sock: socket.socket, peer: Peer, listening: Listening) -> None:
        limit = self.config.main.worker_connections
        if len(self.loop.connections) >= limit:
            sock.close()
            self._alert_connections(limit, listening)
            return
        sock.setblocking(False)
        try:
            self.handler(sock, peer, listening.listen, listening.server, self.loop)
        except Exception as err:  # a broken session must not take the worker down
            self.log.alert(f"connection handler failed: {err!r}")
            sock.close()

    def _alert_connections(self, limit: int, listening: Listening) -> None:
        now = time.monotonic()
        if now - self._last_connections_alert >= 1.0:
            self._last_connections_alert = now
            self._listener_log(listening).alert(f"{limit} worker_connections are not enough")

    # -- stopping ------------------------------------------------------------------------

    def _close_listeners(self) -> None:
        for listening in self.listeners:
            # A listener resting after EMFILE is not registered.
            with contextlib.suppress(KeyError, ValueError):
                self.loop.selector.unregister(listening.sock)
            listening.sock.close()
        self.listeners.clear()

    def _shutdown_timed_out(self) -> None:
        # nginx sets c->close on every connection; a mail session then simply ends.
        if self.loop.connections:
            count = len(self.loop.connections)
            self.log.notice(f"worker_shutdown_timeout expired, closing {count} connection(s)")
        self._close_connections()

    def _close_connections(self) -> None:
        for conn in list(self.loop.connections):
            conn.close()
            self.loop.untrack(conn)
