"""The PROXY protocol (haproxy's proxy-protocol.txt): headers read on ``listen ... proxy_protocol``
and written to the backend with ``proxy_protocol on|v2``, as nginx's ``ngx_proxy_protocol.c``.

Sans-IO. Reading: nginx peeks at most 4096 bytes, parses them, then consumes exactly the header,
so :func:`parse_proxy_header` is a pure function of the bytes seen so far; the session peeks,
calls it, and ``recv``s ``ProxyHeader.length`` bytes on success. Writing: the two builders return
the header to send before anything else, in one write.

Addresses are ``(text, port)`` pairs as the socket layer prints them (``"192.0.2.1"``,
``"2001:db8::1"``, ``"::ffff:192.0.2.1"``); anything that is not an IP literal (a unix socket,
``("unix:/run/mail.sock", 0)``) is an address of unknown family.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass

from mailgate.worker.proxy_protocol.crc32c import crc32c
from mailgate.worker.sansio import NEED_DATA, NeedData, log_text

SockName = tuple[str, int]

V1_MAX_HEADER = 107  # "PROXY TCP6 " + 2 * 39 + 2 * 5 + 4 separators and CRLF
MAX_HEADER = 4096  # NGX_PROXY_PROTOCOL_MAX_HEADER: what nginx peeks, so the v2 bound too

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = struct.Struct("!12sBBH")  # signature, version|command, family|transport, length
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_V2_TLV = struct.Struct("!BH")

_AF_UNSPEC, _AF_INET, _AF_INET6 = 0, 1, 2
_STREAM = 1
_PROXY_COMMAND = 0x21  # version 2, command PROXY

# TLV types (proxy-protocol.txt section 2.2)
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04
# nginx writes this verify word when no "ssl_verify" TLV value is configured (mail has none)
_UNSET_VERIFY = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """What a PROXY header said about the client (``c->proxy_protocol`` in nginx)."""

    src_addr: str
    src_port: int
    dst_addr: str
    dst_port: int
    tlvs: bytes = b""  # v2 only: the raw TLV area after the addresses


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A well-formed header of ``length`` bytes; ``info`` is None for UNKNOWN, LOCAL and
    families or transports nginx does not use (the connection then keeps its own addresses)."""

    length: int
    info: ProxyInfo | None


@dataclass(frozen=True, slots=True)
class BrokenHeader:
    """A header nginx refuses: close the connection. ``log_message`` (error level) is None
    where nginx logs nothing."""

    log_message: str | None


ParseResult = ProxyHeader | BrokenHeader | NeedData


@dataclass(frozen=True, slots=True)
class TlsTlvs:
    """The client's TLS parameters that a v2 header carries, as nginx fills them in."""

    version: str  # SSL_get_version(): "TLSv1.3"
    cipher: str  # SSL_CIPHER_get_name()
    cn: str = ""  # client certificate subject CN, "" without a certificate
    sig_alg: str = ""  # client certificate signature algorithm short name
    key_alg: str = ""  # client certificate public key algorithm short name
    alpn: bytes = b""
    sni: str = ""
    cert_verified: bool = False  # SSL_get_verify_result() == X509_V_OK
    session_reused: bool = False


# --- reading -------------------------------------------------------------------------------


def parse_proxy_header(data: bytes) -> ParseResult:
    """Judge the first bytes of a connection on a ``proxy_protocol`` listener.

    Unlike nginx, which parses whatever its single peek returned, an incomplete header is
    ``NEED_DATA`` (up to the v1/v2 size bounds), so a header split across TCP segments works.
    """
    data = data[:MAX_HEADER]
    if V2_SIGNATURE.startswith(data[:12]) and len(data) < _V2_FIXED.size:
        return NEED_DATA
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    return _parse_v1(data[:V1_MAX_HEADER])


def _broken(data: bytes) -> BrokenHeader:
    line = re.split(rb"[\r\n]", data, maxsplit=1)[0]
    return BrokenHeader(f'broken header: "{log_text(line)}"')


_V1_ADDR = rb"[0-9A-Fa-f:.]*"
_V1_PORT = rb"[^ \r\n]*"
_V1_INET = re.compile(
    rb"PROXY TCP[46] (%s) (%s) (%s) (%s)\r\n" % (_V1_ADDR, _V1_ADDR, _V1_PORT, rb"[^\r\n]*")
)
_V1_UNKNOWN = re.compile(rb"PROXY UNKNOWN[^\n]*?\r\n")


def _parse_v1(data: bytes) -> ParseResult:
    if len(data) < 6 and b"PROXY ".startswith(data):
        return NEED_DATA
    if not data.startswith(b"PROXY "):
        return _broken(data)
    end = data.find(b"\n")
    if end < 0:
        return NEED_DATA if len(data) < V1_MAX_HEADER else _broken(data)
    line = data[: end + 1]
    unknown = _V1_UNKNOWN.match(line)
    if unknown is not None:
        return ProxyHeader(unknown.end(), None)
    inet = _V1_INET.fullmatch(line)
    if inet is None:
        return _broken(data)
    src_port, dst_port = _port(inet[3]), _port(inet[4])
    if src_port is None or dst_port is None:
        return _broken(data)
    info = ProxyInfo(inet[1].decode(), src_port, inet[2].decode(), dst_port)
    return ProxyHeader(len(line), info)


def _port(text: bytes) -> int | None:
    """nginx's ``ngx_atoi`` bounded to 0..65535: digits only, at least one."""
    return int(text) if text.isdigit() and int(text) <= 65535 else None


def _parse_v2(data: bytes) -> ParseResult:
    _, version_command, family_transport, length = _V2_FIXED.unpack_from(data)
    if version_command >> 4 != 2:
        return BrokenHeader(f"unknown PROXY protocol version: {version_command >> 4}")
    end = _V2_FIXED.size + length
    if end > MAX_HEADER:
        return BrokenHeader("header is too large")
    if len(data) < end:
        return NEED_DATA
    body = data[_V2_FIXED.size : end]
    if version_command & 0x0F != 1 or family_transport & 0x0F != _STREAM:
        return ProxyHeader(end, None)  # LOCAL, or not a stream: keep the real addresses
    layout = {_AF_INET: _V2_INET, _AF_INET6: _V2_INET6}.get(family_transport >> 4)
    if layout is None:
        return ProxyHeader(end, None)
    if len(body) < layout.size:
        return BrokenHeader(None)
    src, dst, src_port, dst_port = layout.unpack_from(body)
    family = socket.AF_INET if layout is _V2_INET else socket.AF_INET6
    info = ProxyInfo(
        socket.inet_ntop(family, src),
        src_port,
        socket.inet_ntop(family, dst),
        dst_port,
        body[layout.size :],
    )
    return ProxyHeader(end, info)


# --- writing -------------------------------------------------------------------------------


def _ip(name: SockName) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name[0])
    except ValueError:
        return None


def build_v1(client: SockName, local: SockName) -> bytes:
    """``PROXY TCP4|TCP6 <client> <local> <cport> <lport>\\r\\n``; ``PROXY UNKNOWN\\r\\n`` when the
    client is not on IP. The keyword follows the client's family, as nginx's."""
    address = _ip(client)
    if address is None:
        return b"PROXY UNKNOWN\r\n"
    line = f"PROXY TCP{address.version} {client[0]} {local[0]} {client[1]} {local[1]}\r\n"
    return line.encode("ascii")


def _v4_bytes(name: SockName) -> tuple[bytes, int]:
    address = _ip(name)
    if address is None or address.version != 4:
        return bytes([127, 0, 0, 1]), 0  # nginx substitutes 127.0.0.1 port 0
    return address.packed, name[1]


def _v6_bytes(name: SockName) -> tuple[bytes, int]:
    address = _ip(name)
    if address is None:
        return ipaddress.IPv6Address("::1").packed, 0  # nginx substitutes ::1 port 0
    if address.version == 4:
        return ipaddress.IPv6Address(f"::ffff:{address}").packed, name[1]
    return address.packed, name[1]


def _unmapped(name: SockName) -> SockName | None:
    """``::ffff:a.b.c.d`` as ``a.b.c.d``; None for anything else."""
    address = _ip(name)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped), name[1]
    return None


def _v2_addresses(client: SockName, local: SockName) -> tuple[int, bytes]:
    """Family and address block: the widest family on either side wins, except that two
    v4-mapped IPv6 addresses are written as IPv4 (as nginx)."""
    unmapped_client, unmapped_local = _unmapped(client), _unmapped(local)
    if unmapped_client is not None and unmapped_local is not None:
        client, local = unmapped_client, unmapped_local
    versions = {address.version for address in (_ip(client), _ip(local)) if address}
    if 6 in versions:
        (src, sport), (dst, dport) = _v6_bytes(client), _v6_bytes(local)
        return _AF_INET6, _V2_INET6.pack(src, dst, sport, dport)
    if 4 in versions:
        (src, sport), (dst, dport) = _v4_bytes(client), _v4_bytes(local)
        return _AF_INET, _V2_INET.pack(src, dst, sport, dport)
    return _AF_UNSPEC, b""


def _tlv(kind: int, value: bytes) -> bytes:
    return _V2_TLV.pack(kind, len(value)) + value


def _tls_tlvs(tls: TlsTlvs) -> bytes:
    """nginx's automatic TLVs: ALPN and AUTHORITY first, then one PP2_TYPE_SSL holding the client
    flags, the verify word and the sub-TLVs that have a value."""
    outer = [(PP2_TYPE_ALPN, tls.alpn), (PP2_TYPE_AUTHORITY, tls.sni.encode())]
    subs = [
        (PP2_SUBTYPE_SSL_VERSION, tls.version),
        (PP2_SUBTYPE_SSL_CN, tls.cn),
        (PP2_SUBTYPE_SSL_CIPHER, tls.cipher),
        (PP2_SUBTYPE_SSL_SIG_ALG, tls.sig_alg),
        (PP2_SUBTYPE_SSL_KEY_ALG, tls.key_alg),
    ]
    client = PP2_CLIENT_SSL
    if tls.cn:
        client |= PP2_CLIENT_CERT_SESS
        if tls.cert_verified and not tls.session_reused:
            client |= PP2_CLIENT_CERT_CONN
    ssl = struct.pack("!BI", client, _UNSET_VERIFY)
    ssl += b"".join(_tlv(kind, text.encode()) for kind, text in subs if text)
    return b"".join(_tlv(kind, value) for kind, value in outer if value) + _tlv(PP2_TYPE_SSL, ssl)


def build_v2(client: SockName, local: SockName, tls: TlsTlvs | None = None) -> bytes:
    """The binary header for ``proxy_protocol v2``: addresses, the TLS TLVs when the client
    is on TLS, and a final CRC32C TLV computed over the whole header with its value zeroed."""
    family, addresses = _v2_addresses(client, local)
    body = addresses + (_tls_tlvs(tls) if tls is not None else b"")
    body += _tlv(PP2_TYPE_CRC32C, bytes(4))
    fixed = _V2_FIXED.pack(V2_SIGNATURE, _PROXY_COMMAND, family << 4 | _STREAM, len(body))
    header = fixed + body
    return header[:-4] + struct.pack("!I", crc32c(header))
