"""Observability directives, beyond nginx's mail module: ``access_log`` and ``metrics_listen``.

``access_log PATH [main|json];`` and ``access_log off;`` (``mail`` and ``server`` levels)
    One line per client session, written when the session ends. Off by default. A server that
    writes any ``access_log`` replaces the mail level's list, and ``off`` there turns the
    inherited logs off, as nginx's http ``access_log`` merges. Several lines at one level all
    apply. PATH is relative to the prefix, like ``error_log``; each worker opens it with
    ``O_APPEND`` and reopens it on USR1 (``mailgate -s reopen``).

    ``main`` (the default) is one readable line of ``key=value`` fields::

        2024-05-01T12:00:00+00:00 client=192.0.2.7:51234 server=0.0.0.0:993 protocol=imap
        tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 sni=mail.example.com resumed=ticket
        handshake=0.004 login="alice" auth=ok upstream=192.0.2.20:143 bytes_in=1234
        bytes_out=56789 duration=12.345 reason=proxied

    (all on one line). A field without a value is ``-``; ``login`` is quoted with ``"`` and
    ``\\`` escaped and non-printable bytes written as ``\\xHH``. ``json`` writes the same fields
    as one JSON object per line, with ``null`` for an absent value and numbers as numbers. The
    client address is the one after ``set_real_ip_from`` (PROXY protocol). No password, nor
    any other authentication secret, is ever written.

``metrics_listen ADDRESS:PORT | PORT | off;`` (main level)
    Serve Prometheus metrics at ``http://ADDRESS:PORT/metrics``, from a process of its own
    (``mailgate: metrics process``), so a slow scrape never delays the master or a worker.
    Off by default. A bare PORT listens on every IPv4 address; give ``127.0.0.1:9145`` or a
    firewalled address, because the endpoint has no authentication. The socket is bound with
    ``SO_REUSEPORT``, so the endpoint keeps answering across a binary upgrade (USR2), and a
    reload (HUP) with the same address keeps the running process.
"""

from __future__ import annotations

import socket

from mailgate.config.addresses import URLError, parse_url
from mailgate.config.directives import MAIL_OR_SERVER, TAKE1, TAKE12, Call, Context, Directive
from mailgate.config.model import AccessLog, AccessLogFormat, MetricsListen
from mailgate.config.setters import full_path

OFF = "off"
# The level's own "access_log off", kept apart from the field so a later file can refuse it.
_OFF_MARK = "access_log_off"


def _format(call: Call, word: str) -> AccessLogFormat:
    for member in AccessLogFormat:
        if member.value == word:
            return member
    raise call.error(f'unknown log format "{word}"')


def access_log(call: Call, field: str) -> None:
    """A file appended to the level's list, or ``off`` alone (an empty list)."""
    current: tuple[AccessLog, ...] = call.level.get(field, ())  # type: ignore[assignment]
    off = _OFF_MARK in call.level.values
    if call.args[0] == OFF:
        if len(call.args) > 1:
            raise call.error(f'invalid parameter "{call.args[1]}"')
        if current or off:
            raise call.error('"access_log off" cannot be combined with other "access_log"')
        call.level.values[_OFF_MARK] = True
        call.store(field, ())
        return
    if off:
        raise call.error('"access_log off" cannot be combined with other "access_log"')
    if call.args[0].startswith("syslog:"):
        raise call.error('"access_log" to syslog is not supported, give a file')
    path = full_path(call.state.prefix, call.args[0])
    fmt = _format(call, call.args[1]) if len(call.args) > 1 else AccessLogFormat.MAIN
    if any(log.path == path for log in current):
        raise call.error(f'duplicate "access_log" file "{path}"')
    call.store(field, (*current, AccessLog(path, fmt)))


def metrics_listen(call: Call, field: str) -> None:
    """``ADDRESS:PORT``, ``[IPv6]:PORT``, ``PORT`` or ``off``; names resolve to the first IP."""
    if field in call.level.values:
        raise call.duplicate()
    text = call.args[0]
    if text == OFF:
        call.store(field, None)
        return
    try:
        url = parse_url(text, listen=True)
    except URLError as err:
        raise call.error(f'{err} in "{text}" of the "metrics_listen" directive') from None
    if url.family == socket.AF_UNIX:
        raise call.error(f'unix sockets are not supported in "{text}" of "metrics_listen"')
    if url.no_port:
        raise call.error(f'no port in "{text}" of the "metrics_listen" directive')
    addr = url.addrs[0]
    call.store(field, MetricsListen(addr.family, addr.host, addr.port, call.source))


DIRECTIVES = (
    Directive("access_log", MAIL_OR_SERVER, TAKE12, access_log, "access_log"),
    Directive("metrics_listen", Context.MAIN, TAKE1, metrics_listen, "metrics_listen"),
)
