"""The worker's connection handler for mail: one :class:`Session` per accepted socket.

It holds what sessions share within a worker: the TLS contexts and error logs per server,
the access logs, the listeners' metric children and the resolvers.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL

from mailgate.config import model
from mailgate.worker.io.loop import Loop
from mailgate.worker.io.stream import socket_family
from mailgate.worker.observe import metrics as worker_metrics
from mailgate.worker.observe.access_log import AccessLogs
from mailgate.worker.resolver.client import Resolver
from mailgate.worker.session.greeting import ClientNames
from mailgate.worker.session.log import SessionLog
from mailgate.worker.session.session import Session

if TYPE_CHECKING:  # at run time the master builds them after native.check() (cli.Paths.build)
    from mailgate.worker.tls.context import Contexts

INFO_LEVEL = 7  # nginx's (and master.log.Level's) number for info
POP3_CLIENT_BUFFER = 128  # nginx's fixed POP3 command buffer


class SessionFactory:
    """The worker's connection handler: makes a :class:`Session` per accepted socket."""

    def __init__(
        self,
        config: model.Config,
        log: SessionLog,
        contexts: Contexts,
        *,
        server_logs: Mapping[int, SessionLog] | None = None,
    ) -> None:
        """``server_logs``: the error log of each server that has its own, by index into
        ``config.servers``; as nginx's ``ngx_set_connection_log``, it replaces ``log`` for
        that server's sessions."""
        self.log = log
        self._resolvers: dict[tuple[object, ...], ClientNames] = {}
        self.contexts = contexts
        self._numbers = 0
        # Hot path: info lines (two to four per session) and their nginx-style context are
        # built only when some target of the session's error_log takes info.
        self.info_enabled = _takes_info(log)
        # Keyed by the server object itself, as the contexts: (its log, whether it takes info).
        own = server_logs or {}
        self._logs: dict[int, tuple[SessionLog, bool]] = {
            id(server): (own[index], _takes_info(own[index]))
            for index, server in enumerate(config.servers)
            if index in own
        }
        # Worked out once per server: every session asks.
        self._client_buffers = {id(server): _client_buffer(server) for server in config.servers}
        self.access_logs = AccessLogs(config.servers, log)
        # Bound here, before fork, so every worker starts with its listeners' series at 0.
        self._metrics: dict[int, worker_metrics.ListenerMetrics] = {}
        for server in config.servers:
            for listen in server.listens:
                self.listener_metrics(listen, server)

    def __call__(
        self,
        sock: socket.socket,
        peer: Any,
        listen: model.Listen,
        server: model.ServerConfig,
        loop: Loop,
    ) -> None:
        self._numbers += 1
        client = _client(sock, peer)
        Session(self, self._numbers, sock, client, listen=listen, server=server, loop=loop)

    def client_buffer(self, server: model.ServerConfig) -> int:
        """How many bytes of the client's a session holds: its command buffer."""
        return self._client_buffers[id(server)]

    def log_for(self, server: model.ServerConfig) -> tuple[SessionLog, bool]:
        """The error log of ``server``'s sessions, and whether it takes info lines."""
        return self._logs.get(id(server)) or (self.log, self.info_enabled)

    def context(self, server: model.ServerConfig) -> SSL.Context | None:
        return self.contexts.for_server(server)

    def listener_metrics(
        self, listen: model.Listen, server: model.ServerConfig
    ) -> worker_metrics.ListenerMetrics:
        """The listener's metric children, found by the ``Listen`` object (no formatting)."""
        found = self._metrics.get(id(listen))
        if found is None:
            found = worker_metrics.for_listener(listen.text, server.protocol.value)
            self._metrics[id(listen)] = found
        return found

    def open_logs(self) -> None:
        """Open the access logs now: in a new worker, before it drops privileges."""
        self.access_logs.open_all()

    def reopen(self) -> None:
        """USR1: reopen the access logs (the worker reopens its error log itself)."""
        self.access_logs.reopen()

    def resolver(self, server: model.ServerConfig, loop: Loop) -> ClientNames | None:
        """The worker's resolver for this server's ``resolver`` settings (None: off).

        Servers with the same settings share one, and so its cache, as nginx's do."""
        if not server.resolver:
            return None
        key = (server.resolver, server.resolver_valid, server.resolver_ipv4, server.resolver_ipv6)
        if key not in self._resolvers:
            self._resolvers[key] = Resolver.from_config(loop, server)
        return self._resolvers[key]


def _takes_info(log: SessionLog) -> bool:
    # A log without ``enabled`` (a test double) takes everything.
    enabled = getattr(log, "enabled", None)
    return enabled is None or bool(enabled(INFO_LEVEL))


def _client(sock: socket.socket, peer: Any) -> tuple[str, int]:
    """``(host, port)`` from the address ``accept()`` returned; ``("unix:", 0)`` for UNIX."""
    if socket_family(sock) == socket.AF_UNIX:
        return "unix:", 0
    return peer[0], peer[1]


def _client_buffer(server: model.ServerConfig) -> int:
    sizes = {
        model.Protocol.IMAP: server.imap_client_buffer,
        model.Protocol.POP3: POP3_CLIENT_BUFFER,
        model.Protocol.SMTP: server.smtp_client_buffer,
    }
    return sizes[server.protocol]
