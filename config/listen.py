"""The mail ``listen`` directive (``ngx_mail_core_listen``): address plus parameters.

One ``Listen`` is made per address the first argument stands for (a host name may resolve
to several). Parameters that nginx applies with a separate ``bind()`` (backlog, buffers,
ipv6only, so_keepalive, multipath) also set ``bind``.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable

from mailgate.config.addresses import URLError, parse_url
from mailgate.config.directives import Call
from mailgate.config.model import KeepAlive, Listen, Protocol, Source
from mailgate.config.setters import atoi, parse_size, parse_time

# The ports that pick a server's protocol when it has no "protocol" directive.
PROTOCOL_PORTS = {
    110: Protocol.POP3,
    995: Protocol.POP3,
    143: Protocol.IMAP,
    993: Protocol.IMAP,
    25: Protocol.SMTP,
    465: Protocol.SMTP,
    587: Protocol.SMTP,
}

Options = dict[str, object]


def _keepalive(call: Call, param: str) -> KeepAlive:
    value = param[len("so_keepalive=") :]
    if value == "on":
        return KeepAlive(True)
    if value == "off":
        return KeepAlive(False)
    invalid = call.error(f'invalid so_keepalive value: "{value}"')
    parts = value.split(":", 2)
    parts += [""] * (3 - len(parts))
    idle_text, interval_text, count_text = parts
    idle = parse_time(idle_text, msec=False) if idle_text else 0.0
    interval = parse_time(interval_text, msec=False) if interval_text else 0.0
    count = atoi(count_text) if count_text else 0
    if idle is None or interval is None or count is None:
        raise invalid
    if not (idle or interval or count):
        raise invalid
    return KeepAlive(True, int(idle) or None, int(interval) or None, count or None)


def _sized(call: Call, param: str, key: str) -> int:
    value = parse_size(param[len(key) + 1 :])
    if value is None:
        raise call.error(f'invalid {key} "{param}"')
    return value


def _backlog(call: Call, param: str) -> int:
    value = atoi(param[len("backlog=") :])
    if not value:
        raise call.error(f'invalid backlog "{param}"')
    return value


def _ipv6only(call: Call, param: str) -> bool:
    rest = param[len("ipv6only=o") :]
    if rest not in ("n", "ff"):
        raise call.error(f'invalid ipv6only flags "{param[len("ipv6only=") :]}"')
    return rest == "n"


# Parameters of the form name=value: the parser and the Listen field they set.
_VALUED: dict[str, tuple[str, Callable[[Call, str], object]]] = {
    "backlog=": ("backlog", _backlog),
    "rcvbuf=": ("rcvbuf", lambda call, p: _sized(call, p, "rcvbuf")),
    "sndbuf=": ("sndbuf", lambda call, p: _sized(call, p, "sndbuf")),
    "ipv6only=o": ("ipv6only", _ipv6only),
    "so_keepalive=": ("so_keepalive", _keepalive),
}
_WORDS = ("bind", "ssl", "proxy_protocol", "multipath")
_BIND_IMPLIED = {"backlog", "rcvbuf", "sndbuf", "ipv6only", "so_keepalive", "multipath"}


def _options(call: Call) -> Options:
    options: Options = {}
    for param in call.args[1:]:
        if param in _WORDS:
            options[param] = True
        else:
            prefix = next((p for p in _VALUED if param.startswith(p)), None)
            if prefix is None:
                raise call.error(f'the invalid "{param}" parameter')
            key, parse = _VALUED[prefix]
            options[key] = parse(call, param)
        if _BIND_IMPLIED & options.keys():
            options["bind"] = True
    return options


def _addresses(call: Call) -> list[tuple[socket.AddressFamily, str, int, str]]:
    text = call.args[0]
    try:
        url = parse_url(text, listen=True)
    except URLError as err:
        raise call.error(f'{err} in "{text}" of the "listen" directive') from None
    if url.no_port and url.family != socket.AF_UNIX:
        # nginx would bind port 0 (a random port), which no mail client can find.
        raise call.error(f'no port in "{text}" of the "listen" directive')
    return [(a.family, a.host, a.port, a.name) for a in url.addrs]


def listen(call: Call, field: str) -> None:
    """Add this server's sockets, refusing an address:port already listened on."""
    server = call.state.servers[-1]
    addresses = _addresses(call)
    options = _options(call)
    if "protocol" not in call.level.values:
        protocol = PROTOCOL_PORTS.get(addresses[0][2])
        if protocol is not None:
            call.level.values["protocol"] = protocol
    source = Source(call.source.path, call.source.line)
    taken = {(lst.family, lst.host, lst.port) for lst in call.state.all_listens()}
    for family, host, port, name in dict.fromkeys(addresses):
        if (family, host, port) in taken:
            raise call.error(f'duplicate "{name}" address and port pair')
        item = Listen(family, host, port, source)
        server.listens.append(dataclasses.replace(item, **options))  # type: ignore[arg-type]
        taken.add((family, host, port))
    if options.get("ssl") and "listen_ssl" not in call.level.sources:
        call.level.sources["listen_ssl"] = source
