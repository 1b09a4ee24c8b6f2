"""PROXY protocol headers: the builders for the backend and the parser for listeners."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate.worker.proxy_protocol.codec import (
    MAX_HEADER,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_SSL,
    V1_MAX_HEADER,
    V2_SIGNATURE,
    BrokenHeader,
    ProxyHeader,
    ProxyInfo,
    TlsTlvs,
    build_v1,
    build_v2,
    parse_proxy_header,
)
from mailgate.worker.proxy_protocol.crc32c import crc32c
from mailgate.worker.sansio import NEED_DATA

CLIENT = ("192.0.2.7", 40000)
LOCAL = ("203.0.113.5", 993)


def tlvs(area: bytes) -> list[tuple[int, bytes]]:
    found = []
    while area:
        kind, length = struct.unpack_from("!BH", area)
        found.append((kind, area[3 : 3 + length]))
        area = area[3 + length :]
    return found


# --- v1 ------------------------------------------------------------------------------------


def test_v1_tcp4_header() -> None:
    assert build_v1(CLIENT, LOCAL) == b"PROXY TCP4 192.0.2.7 203.0.113.5 40000 993\r\n"


def test_v1_tcp6_header_follows_the_client_family() -> None:
    assert build_v1(("2001:db8::7", 1), ("2001:db8::1", 2)) == (
        b"PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n"
    )


def test_v1_unknown_for_a_unix_socket_client() -> None:
    assert build_v1(("unix:", 0), ("unix:/run/mail.sock", 0)) == b"PROXY UNKNOWN\r\n"


def test_v1_round_trip() -> None:
    header = build_v1(CLIENT, LOCAL)
    assert parse_proxy_header(header + b"A1 LOGIN") == ProxyHeader(
        len(header), ProxyInfo("192.0.2.7", 40000, "203.0.113.5", 993)
    )


def test_v1_unknown_is_consumed_without_addresses() -> None:
    assert parse_proxy_header(b"PROXY UNKNOWN whatever\r\nEHLO") == ProxyHeader(24, None)


@pytest.mark.parametrize(
    ("data", "log"),
    [
        (b"GET / HTTP/1.0\r\n", 'broken header: "GET / HTTP/1.0"'),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 'broken header: "PROXY TCP5 1.2.3.4 5.6.7.8 1 2"'),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 'broken header: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2"'),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            'broken header: "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536"',
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            'broken header: "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2"',
        ),
        (b"PROXY TCP4 host 5.6.7.8 1 2\r\n", 'broken header: "PROXY TCP4 host 5.6.7.8 1 2"'),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n", 'broken header: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2"'),
        (b"PROXY UNKNOWN\n", 'broken header: "PROXY UNKNOWN"'),
        (b"PROXY " + b"9" * (V1_MAX_HEADER - 6), 'broken header: "PROXY ' + "9" * 101 + '"'),
    ],
)
def test_malformed_v1_headers_are_broken(data: bytes, log: str) -> None:
    assert parse_proxy_header(data) == BrokenHeader(log)


@pytest.mark.parametrize(
    "data", [b"", b"PRO", b"PROXY TCP4 1.2.3.4", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"]
)
def test_incomplete_v1_header_needs_data(data: bytes) -> None:
    assert parse_proxy_header(data) is NEED_DATA


# --- v2 ------------------------------------------------------------------------------------


def test_v2_ipv4_header_layout_and_crc() -> None:
    header = build_v2(CLIENT, LOCAL)
    assert header[:12] == V2_SIGNATURE
    assert header[12:16] == bytes([0x21, 0x11, 0, 12 + 7])
    assert header[16:28] == bytes([192, 0, 2, 7, 203, 0, 113, 5]) + struct.pack("!HH", 40000, 993)
    kind, value = tlvs(header[28:])[0]
    assert kind == PP2_TYPE_CRC32C
    assert struct.unpack("!I", value)[0] == crc32c(header[:-4] + bytes(4))


def test_v2_mixed_families_promote_ipv4_to_mapped_ipv6() -> None:
    header = build_v2(CLIENT, ("2001:db8::1", 143))
    assert header[13] == 0x21
    info = parse_proxy_header(header)
    assert isinstance(info, ProxyHeader) and info.info is not None
    assert (info.info.src_addr, info.info.dst_addr) == ("::ffff:192.0.2.7", "2001:db8::1")


def test_v2_two_mapped_addresses_are_written_as_ipv4() -> None:
    header = build_v2(("::ffff:192.0.2.7", 1), ("::ffff:203.0.113.5", 2))
    assert header[13] == 0x11


def test_v2_unix_sockets_are_unspec() -> None:
    header = build_v2(("unix:", 0), ("unix:/run/mail.sock", 0))
    assert header[12:16] == bytes([0x21, 0x01, 0, 7])


def test_v2_unknown_local_side_is_substituted_as_nginx() -> None:
    header = build_v2(CLIENT, ("unix:/run/mail.sock", 0))
    assert header[16:28] == bytes([192, 0, 2, 7, 127, 0, 0, 1]) + struct.pack("!HH", 40000, 0)


def test_v2_tls_tlvs_order_and_client_flags() -> None:
    tls = TlsTlvs(
        version="TLSv1.3",
        cipher="TLS_AES_128_GCM_SHA256",
        cn="client",
        alpn=b"imap",
        sni="mail.example",
        cert_verified=True,
    )
    header = build_v2(CLIENT, LOCAL, tls)
    found = tlvs(header[28:])
    assert [kind for kind, _ in found] == [
        PP2_TYPE_ALPN,
        PP2_TYPE_AUTHORITY,
        PP2_TYPE_SSL,
        PP2_TYPE_CRC32C,
    ]
    ssl = found[2][1]
    assert ssl[0] == 0x07  # CLIENT_SSL | CLIENT_CERT_CONN | CLIENT_CERT_SESS
    assert ssl[1:5] == b"\xff\xff\xff\xff"
    assert tlvs(ssl[5:]) == [
        (0x21, b"TLSv1.3"),
        (0x22, b"client"),
        (0x23, b"TLS_AES_128_GCM_SHA256"),
    ]


def test_v2_round_trip_keeps_the_tlv_area() -> None:
    header = build_v2(CLIENT, LOCAL, TlsTlvs(version="TLSv1.2", cipher="X"))
    result = parse_proxy_header(header + b"* OK")
    assert isinstance(result, ProxyHeader)
    assert result.length == len(header)
    assert result.info is not None
    assert (result.info.src_addr, result.info.src_port) == CLIENT
    assert result.info.tlvs == header[28:]


def test_v2_local_command_is_consumed_without_addresses() -> None:
    local = V2_SIGNATURE + bytes([0x20, 0x11, 0, 12]) + bytes(12)
    assert parse_proxy_header(local) == ProxyHeader(28, None)


def v2(version_command: int = 0x21, family: int = 0x11, body: bytes = bytes(12)) -> bytes:
    return V2_SIGNATURE + bytes([version_command, family]) + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize(
    ("data", "result"),
    [
        (v2(version_command=0x11), BrokenHeader("unknown PROXY protocol version: 1")),
        (v2(body=bytes(4)), BrokenHeader(None)),
        (v2(family=0x21, body=bytes(12)), BrokenHeader(None)),
        (
            V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", MAX_HEADER),
            BrokenHeader("header is too large"),
        ),
        (v2(family=0x12), ProxyHeader(28, None)),  # datagram
        (v2(family=0x31, body=bytes(216)), ProxyHeader(232, None)),  # AF_UNIX
    ],
)
def test_v2_header_table(data: bytes, result: object) -> None:
    assert parse_proxy_header(data) == result


@pytest.mark.parametrize("cut", [1, 12, 15, 16, 27])
def test_incomplete_v2_header_needs_data(cut: int) -> None:
    assert parse_proxy_header(build_v2(CLIENT, LOCAL)[:cut]) is NEED_DATA


@given(st.binary(max_size=MAX_HEADER + 100))
def test_parser_never_raises_and_never_claims_more_than_it_saw(data: bytes) -> None:
    result = parse_proxy_header(data)
    if isinstance(result, ProxyHeader):
        assert result.length <= min(len(data), MAX_HEADER)


@given(
    st.ip_addresses(v=4).map(str),
    st.integers(0, 65535),
    st.ip_addresses(v=4).map(str),
    st.integers(0, 65535),
)
def test_v1_and_v2_round_trip_any_ipv4_pair(src: str, sport: int, dst: str, dport: int) -> None:
    for build in (build_v1, build_v2):
        result = parse_proxy_header(build((src, sport), (dst, dport)))
        assert isinstance(result, ProxyHeader) and result.info is not None
        info = result.info
        assert (info.src_addr, info.src_port, info.dst_addr, info.dst_port) == (
            src,
            sport,
            dst,
            dport,
        )
