"""Addresses as nginx's ``ngx_parse_url`` reads them (src/core/ngx_inet.c).

Forms: ``unix:/path[:uri]``, ``[ipv6][:port][/uri]``, ``host[:port][/uri]``; for ``listen``
also a bare port and ``*:port``. Host names are resolved at parse time, IPv4 addresses first,
as nginx does. The error strings (``invalid host``, ``invalid port``, ``host not found``...)
are nginx's ``u->err`` values; callers put them in their directive's sentence.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

# sizeof(sockaddr_un.sun_path) on Linux, including the terminating NUL.
UNIX_PATH_MAX = 108

Resolver = Callable[[str], list[tuple[socket.AddressFamily, str]]]


class URLError(Exception):
    """``ngx_parse_url`` failed; ``str()`` is nginx's ``u->err``."""


@dataclass(frozen=True, slots=True)
class Addr:
    """One resolved address: the IP (or socket path) and how nginx prints it."""

    family: socket.AddressFamily
    host: str
    port: int
    name: str


@dataclass(frozen=True, slots=True)
class URL:
    """A parsed URL: its host as written, port, uri and every address it stands for."""

    host: str
    port: int
    uri: str
    addrs: tuple[Addr, ...]
    family: socket.AddressFamily
    no_port: bool = False


def system_resolve(host: str) -> list[tuple[socket.AddressFamily, str]]:
    """``getaddrinfo`` for TCP; the addresses in the order the system gives them."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return []
    return [(info[0], str(info[4][0])) for info in infos]


# Tests replace this to keep name lookups off the network.
resolve_host: Resolver = system_resolve


def format_addr(family: socket.AddressFamily, host: str, port: int) -> str:
    """``127.0.0.1:993``, ``[::1]:993``: nginx's ``ngx_sock_ntop`` with the port."""
    if family == socket.AF_INET6:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _port(text: str) -> int:
    if not text or not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise URLError("invalid port")
    return int(text)


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def resolve(host: str, port: int) -> tuple[Addr, ...]:
    """Every IPv4 then IPv6 address of ``host``; ``URLError("host not found")`` if none."""
    found = [
        (family, ip)
        for family, ip in resolve_host(host)
        if family in (socket.AF_INET, socket.AF_INET6)
    ]
    if not found:
        raise URLError("host not found")
    ordered = [f for f in found if f[0] == socket.AF_INET] + [
        f for f in found if f[0] == socket.AF_INET6
    ]
    unique = list(dict.fromkeys(ordered))
    return tuple(Addr(fam, ip, port, format_addr(fam, ip, port)) for fam, ip in unique)


def _parse_unix(url: str, uri_part: bool) -> URL:
    path, uri = url[5:], ""
    if uri_part and ":" in path:
        path, uri = path.split(":", 1)
    if not path:
        raise URLError("no path in the unix domain socket")
    if len(path.encode("utf-8", "surrogateescape")) + 1 > UNIX_PATH_MAX:
        raise URLError("too long path in the unix domain socket")
    addr = Addr(socket.AF_UNIX, path, 0, f"unix:{path}")
    return URL(path, 0, uri, (addr,), socket.AF_UNIX)


def _parse_inet6(url: str, listen: bool, uri_part: bool, default_port: int) -> URL:
    close = url.find("]")
    if close < 0:
        raise URLError("invalid host")
    host, rest = url[1:close], url[close + 1 :]
    uri = ""
    slash = rest.find("/")
    if slash >= 0:
        if listen or not uri_part:
            raise URLError("invalid host")
        rest, uri = rest[:slash], rest[slash:]
    no_port = not rest.startswith(":")
    port = default_port if no_port else _port(rest[1:])
    if not host:
        raise URLError("no host")
    try:
        ip = str(ipaddress.IPv6Address(host))
    except ValueError:
        raise URLError("invalid IPv6 address") from None
    addr = Addr(socket.AF_INET6, ip, port, format_addr(socket.AF_INET6, ip, port))
    return URL(f"[{host}]", port, uri, (addr,), socket.AF_INET6, no_port)


def _parse_inet(url: str, listen: bool, uri_part: bool, default_port: int) -> URL:
    cuts = [i for i in (url.find("/"), url.find("?")) if i >= 0]
    uri = ""
    host_port = url
    if cuts:
        if listen or not uri_part:
            raise URLError("invalid host")
        host_port, uri = url[: min(cuts)], url[min(cuts) :]
    no_port = ":" not in host_port
    if not no_port:
        host, port_text = host_port.split(":", 1)
        port = _port(port_text)
    elif listen and not uri and host_port.isascii() and host_port.isdigit():
        # "listen 993": a bare port means every IPv4 address.
        port = _port(host_port)
        addr = Addr(socket.AF_INET, "0.0.0.0", port, f"0.0.0.0:{port}")
        return URL("", port, "", (addr,), socket.AF_INET)
    else:
        host, port = host_port, default_port
    if not host:
        raise URLError("no host")
    if listen and host == "*":
        host = "0.0.0.0"
    ip = _ipv4(host)
    if ip is not None:
        addr = Addr(socket.AF_INET, ip, port, f"{host if host != '0.0.0.0' else ip}:{port}")
        return URL(host, port, uri, (addr,), socket.AF_INET, no_port)
    addrs = resolve(host, port)
    return URL(host, port, uri, addrs, addrs[0].family, no_port)


def parse_url(
    url: str, *, listen: bool = False, uri_part: bool = False, default_port: int = 0
) -> URL:
    """``ngx_parse_url``: raises ``URLError`` with nginx's reason."""
    if url[:5].lower() == "unix:":
        return _parse_unix(url, uri_part)
    if url.startswith("["):
        return _parse_inet6(url, listen, uri_part, default_port)
    return _parse_inet(url, listen, uri_part, default_port)
