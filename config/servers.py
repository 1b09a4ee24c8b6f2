"""Merging each ``server {}`` with ``mail {}`` and checking the result (``merge_srv_conf``).

Every field merges the same way: the server's value, else the mail level's, else the
model's default. Fields that nginx keeps as one list (certificates, headers, capabilities,
``ssl_conf_command``) are stored whole per level, so a level that sets any replaces the
inherited list, as nginx's ``ngx_conf_merge_ptr_value`` does.

Checks run in nginx's module order, each over all servers: core (protocol), ssl
(certificates), then auth_http, so the first error reported is the one nginx reports.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mailgate.config.directives import Level, ParseState, ServerLevel
from mailgate.config.errors import ConfigError
from mailgate.config.model import (
    Protocol,
    ServerConfig,
    SessionCache,
    Source,
    StartTLS,
    VerifyClient,
)

_MISSING = object()
# Filled in by build() itself rather than copied from the levels.
_COMPUTED = {"source", "listens", "protocol", "ssl_session_cache", "server_name"}


def server_error(message: str, level: Level) -> ConfigError:
    """An error about a whole server, located at its ``server {`` line (nginx's style)."""
    return ConfigError(message, level.source.path, level.source.line)


@dataclasses.dataclass(slots=True)
class Merged:
    """A server's directives seen through the mail level's."""

    server: ServerLevel
    mail: Level

    @property
    def level(self) -> Level:
        return self.server.level

    def value(self, key: str, default: object = None) -> object:
        for level in (self.server.level, self.mail):
            if key in level.values:
                return level.values[key]
        return default

    def source(self, key: str) -> Source | None:
        for level in (self.server.level, self.mail):
            if key in level.sources:
                return level.sources[key]
        return None


def _check_protocol(srv: Merged) -> None:
    if srv.value("protocol") is None:
        raise server_error("unknown mail protocol for server", srv.level)


def _tls_mode(srv: Merged) -> tuple[str, Source] | None:
    """Why this server needs a certificate, and where that was said."""
    ssl_source = srv.level.sources.get("listen_ssl")
    if ssl_source is not None:
        return "listen ... ssl", ssl_source
    source = srv.source("starttls")
    if srv.value("starttls", StartTLS.OFF) is not StartTLS.OFF and source is not None:
        return "starttls", source
    return None


def _check_ssl(srv: Merged) -> None:
    certs: tuple[str, ...] = srv.value("ssl_certificate_raw", ())  # type: ignore[assignment]
    keys: tuple[str, ...] = srv.value("ssl_certificate_key", ())  # type: ignore[assignment]
    mode = _tls_mode(srv)
    if mode is None:
        if certs and len(keys) < len(certs):
            raise server_error(
                f'no "ssl_certificate_key" is defined for certificate "{certs[-1]}"', srv.level
            )
        return
    name, source = mode

    def error(message: str) -> ConfigError:
        return ConfigError(message, source.path, source.line)

    if not certs:
        raise error(f'no "ssl_certificate" is defined for the "{name}" directive')
    if not keys:
        raise error(f'no "ssl_certificate_key" is defined for the "{name}" directive')
    if len(keys) < len(certs):
        raise error(
            f'no "ssl_certificate_key" is defined for certificate "{certs[-1]}" '
            f'and the "{name}" directive'
        )
    verify = srv.value("ssl_verify_client", VerifyClient.OFF)
    if verify in (VerifyClient.ON, VerifyClient.OPTIONAL) and not (
        srv.value("ssl_client_certificate") or srv.value("ssl_trusted_certificate")
    ):
        raise server_error(
            "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client",
            srv.level,
        )


def _check_auth(srv: Merged) -> None:
    has_auth = srv.value("auth_http") is not None
    has_pass = srv.value("proxy_pass") is not None
    if has_auth and has_pass:
        raise server_error(
            'both "auth_http" and "proxy_pass" are defined for server, mailgate needs one',
            srv.level,
        )
    if not has_auth and not has_pass:
        raise server_error('no "auth_http" is defined for server', srv.level)
    if has_pass and srv.value("protocol") is Protocol.SMTP and not srv.value("proxy_smtp_auth"):
        raise server_error('"proxy_pass" needs "proxy_smtp_auth on" for an smtp server', srv.level)


def _session_cache(srv: Merged) -> SessionCache:
    chosen: tuple[str, int] = srv.value("ssl_session_cache_mode", ("none", 0))  # type: ignore[assignment]
    mode, sessions = chosen
    shared = srv.value("ssl_session_cache_shared")
    name, size = shared if isinstance(shared, tuple) else (None, 0)
    if mode == "off":
        return SessionCache(off=True)
    if mode == "builtin":
        return SessionCache(builtin=True, builtin_size=sessions, shared_name=name, shared_size=size)
    return SessionCache(shared_name=name, shared_size=size)


def _build(srv: Merged) -> ServerConfig:
    values: dict[str, Any] = {}
    for item in dataclasses.fields(ServerConfig):
        if item.name in _COMPUTED:
            continue
        value = srv.value(item.name, _MISSING)
        if value is not _MISSING:
            values[item.name] = value
    server_name = srv.value("server_name")
    if server_name:  # unset or "" means the host name, the model's default
        values["server_name"] = server_name
    protocol = srv.value("protocol")
    assert isinstance(protocol, Protocol)  # checked by _check_protocol
    return ServerConfig(
        source=srv.level.source,
        listens=tuple(srv.server.listens),
        protocol=protocol,
        ssl_session_cache=_session_cache(srv),
        **values,
    )


def build_all(state: ParseState) -> list[ServerConfig]:
    """Merge and check every server of the ``mail {}`` block that just closed."""
    assert state.mail is not None
    merged = [Merged(server, state.mail) for server in state.servers]
    for check in (_check_protocol, _check_ssl, _check_auth):
        for srv in merged:
            check(srv)
    return [_build(srv) for srv in merged]
