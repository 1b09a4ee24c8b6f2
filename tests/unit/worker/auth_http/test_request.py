"""build_request writes nginx's auth_http request byte for byte
(``ngx_mail_auth_http_create_request``)."""

from __future__ import annotations

import dataclasses

import pytest

from mailgate.config.model import HttpURL, Protocol, ServerConfig, Source, VerifyClient
from mailgate.worker.auth_http.request import (
    TEMPUNAVAIL,
    UNAVAILABLE,
    AuthRequest,
    ClientTls,
    auth_peer_name,
    build_request,
    client_host_value,
    escape,
)
from mailgate.worker.proxy_protocol.codec import ProxyInfo

URL = HttpURL(host="127.0.0.1", port=9000, uri="/auth", host_header="auth.example")


def server(protocol: Protocol = Protocol.IMAP, **changes: object) -> ServerConfig:
    base = ServerConfig(source=Source("mail.conf", 1), listens=(), protocol=protocol, auth_http=URL)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def request(protocol: Protocol = Protocol.IMAP, **changes: object) -> AuthRequest:
    base = AuthRequest(
        protocol=protocol, method="plain", user=b"joe", password=b"secret", client_ip="192.0.2.7"
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_imap_plain_login_request_is_byte_exact() -> None:
    assert build_request(server(), request()) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: auth.example\r\n"
        b"Auth-Method: plain\r\n"
        b"Auth-User: joe\r\n"
        b"Auth-Pass: secret\r\n"
        b"Auth-Protocol: imap\r\n"
        b"Auth-Login-Attempt: 1\r\n"
        b"Client-IP: 192.0.2.7\r\n"
        b"\r\n"
    )


def test_pop3_apop_sends_the_salt_after_the_password() -> None:
    req = request(
        Protocol.POP3,
        method="apop",
        password=b"0123456789abcdef0123456789abcdef",
        salt=b"<3141.1700000000@mail.example>",
        login_attempt=2,
    )
    assert build_request(server(Protocol.POP3), req) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: auth.example\r\n"
        b"Auth-Method: apop\r\n"
        b"Auth-User: joe\r\n"
        b"Auth-Pass: 0123456789abcdef0123456789abcdef\r\n"
        b"Auth-Salt: <3141.1700000000@mail.example>\r\n"
        b"Auth-Protocol: pop3\r\n"
        b"Auth-Login-Attempt: 2\r\n"
        b"Client-IP: 192.0.2.7\r\n"
        b"\r\n"
    )


def test_sasl_login_is_reported_as_plain() -> None:
    assert b"Auth-Method: plain\r\n" in build_request(server(), request(method="login"))


def test_plain_never_sends_the_salt_even_when_one_exists() -> None:
    assert b"Auth-Salt" not in build_request(server(), request(salt=b"<1.2@h>"))


def test_login_sends_the_salt_when_one_exists_as_nginx() -> None:
    # nginx compares with NGX_MAIL_AUTH_PLAIN only, so AUTH LOGIN on a POP3 server with apop
    # enabled (salt made at greeting) sends it too, and forgets the password.
    req = request(Protocol.POP3, method="login", salt=b"<1.2@h>")
    assert b"Auth-Salt: <1.2@h>\r\n" in build_request(server(Protocol.POP3), req)
    assert req.sends_salt


def test_external_sends_an_empty_password() -> None:
    req = request(method="external", password=b"")
    assert b"Auth-Method: external\r\nAuth-User: joe\r\nAuth-Pass: \r\n" in build_request(
        server(), req
    )


def test_smtp_none_sends_empty_credentials_and_the_envelope() -> None:
    req = request(
        Protocol.SMTP,
        method="none",
        user=b"stale",
        password=b"stale",
        client_host="client.example",
        smtp_helo=b"client.example",
        smtp_from=b"MAIL FROM:<> SIZE=100",
        smtp_to=b"RCPT TO:<postmaster@example.org>",
    )
    assert build_request(server(Protocol.SMTP), req) == (
        b"GET /auth HTTP/1.0\r\n"
        b"Host: auth.example\r\n"
        b"Auth-Method: none\r\n"
        b"Auth-User: \r\n"
        b"Auth-Pass: \r\n"
        b"Auth-Protocol: smtp\r\n"
        b"Auth-Login-Attempt: 1\r\n"
        b"Client-IP: 192.0.2.7\r\n"
        b"Client-Host: client.example\r\n"
        b"Auth-SMTP-Helo: client.example\r\n"
        b"Auth-SMTP-From: MAIL FROM:<> SIZE=100\r\n"
        b"Auth-SMTP-To: RCPT TO:<postmaster@example.org>\r\n"
        b"\r\n"
    )


def test_smtp_envelope_is_not_sent_for_authenticated_logins() -> None:
    req = request(Protocol.SMTP, client_host=UNAVAILABLE, smtp_helo=b"h", smtp_from=b"MAIL")
    built = build_request(server(Protocol.SMTP), req)
    assert b"Client-Host: [UNAVAILABLE]\r\n" in built
    assert b"Auth-SMTP" not in built


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        (b"a b", b"a%20b"),
        (b"100%", b"100%25"),
        (b"x\r\nAuth-Status: OK", b"x%0D%0AAuth-Status:%20OK"),
        (b"\x00\x1f", b"%00%1F"),
        (b"\x7f\xc3\xa9", b"\x7f\xc3\xa9"),
        (b"+=:;&?", b"+=:;&?"),
    ],
)
def test_escaping_is_nginx_mail_auth_table(raw: bytes, escaped: bytes) -> None:
    assert escape(raw) == escaped


@pytest.mark.parametrize("evil", [b"a\r\nb", b"a\nb", b"a\rb", b"a\x00b", b"a b"])
def test_credentials_never_split_a_header(evil: bytes) -> None:
    built = build_request(server(), request(user=evil, password=evil))
    lines = built.split(b"\r\n")
    assert len(lines) == 10  # 8 lines, the empty line, the nothing after it
    assert all(b"\n" not in line and b"\r" not in line for line in lines)


def test_client_host_is_validated_to_hostname_characters() -> None:
    req = request(Protocol.SMTP, client_host="evil\r\nAuth-Status: OK")
    assert b"Client-Host: [TEMPUNAVAIL]\r\n" in build_request(server(Protocol.SMTP), req)


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("mx-1.example.org", "mx-1.example.org"),
        (UNAVAILABLE, UNAVAILABLE),
        (TEMPUNAVAIL, TEMPUNAVAIL),
        ("bad_name.example", TEMPUNAVAIL),
        ("a b", TEMPUNAVAIL),
        ("", TEMPUNAVAIL),
    ],
)
def test_client_host_value(name: str, sent: str) -> None:
    assert client_host_value(name) == sent


def test_proxy_protocol_addresses_follow_client_host() -> None:
    req = request(
        Protocol.SMTP,
        client_host="c.example",
        proxy=ProxyInfo("198.51.100.1", 40000, "203.0.113.5", 25),
    )
    built = build_request(server(Protocol.SMTP), req)
    assert (
        b"Client-Host: c.example\r\n"
        b"Proxy-Protocol-Addr: 198.51.100.1\r\n"
        b"Proxy-Protocol-Port: 40000\r\n"
        b"Proxy-Protocol-Server-Addr: 203.0.113.5\r\n"
        b"Proxy-Protocol-Server-Port: 25\r\n"
        b"\r\n"
    ) in built


TLS = ClientTls(
    protocol="TLSv1.3",
    cipher="TLS_AES_256_GCM_SHA384",
    verify="SUCCESS",
    subject="CN=client",
    issuer="CN=ca",
    serial="C07AD56B846B5BFF",
    fingerprint="29d6a80a123d13355ed16b4b04605e29cb55a5ad",
    cert_pem=b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
)


def test_tls_without_client_verification_sends_protocol_and_cipher_only() -> None:
    built = build_request(server(), request(tls=TLS))
    assert built.endswith(
        b"Client-IP: 192.0.2.7\r\n"
        b"Auth-SSL: on\r\n"
        b"Auth-SSL-Protocol: TLSv1.3\r\n"
        b"Auth-SSL-Cipher: TLS_AES_256_GCM_SHA384\r\n"
        b"\r\n"
    )


def test_tls_with_client_verification_and_pass_client_cert() -> None:
    config = server(ssl_verify_client=VerifyClient.ON, auth_http_pass_client_cert=True)
    built = build_request(config, request(tls=TLS))
    assert built.endswith(
        b"Auth-SSL: on\r\n"
        b"Auth-SSL-Protocol: TLSv1.3\r\n"
        b"Auth-SSL-Cipher: TLS_AES_256_GCM_SHA384\r\n"
        b"Auth-SSL-Verify: SUCCESS\r\n"
        b"Auth-SSL-Subject: CN=client\r\n"
        b"Auth-SSL-Issuer: CN=ca\r\n"
        b"Auth-SSL-Serial: C07AD56B846B5BFF\r\n"
        b"Auth-SSL-Fingerprint: 29d6a80a123d13355ed16b4b04605e29cb55a5ad\r\n"
        b"Auth-SSL-Cert: -----BEGIN%20CERTIFICATE-----%0AMIIB%0A-----END%20CERTIFICATE-----%0A\r\n"
        b"\r\n"
    )


def test_client_cert_is_not_sent_without_verification() -> None:
    config = server(auth_http_pass_client_cert=True)
    assert b"Auth-SSL-Cert" not in build_request(config, request(tls=TLS))


def test_no_certificate_sends_verify_none_only() -> None:
    tls = ClientTls(protocol="TLSv1.2", cipher="ECDHE-RSA-AES128-GCM-SHA256", verify="NONE")
    config = server(ssl_verify_client=VerifyClient.OPTIONAL, auth_http_pass_client_cert=True)
    built = build_request(config, request(tls=tls))
    assert built.endswith(b"Auth-SSL-Verify: NONE\r\n\r\n")


def test_auth_http_header_lines_come_last_in_config_order() -> None:
    config = server(auth_http_header=(("X-Auth-Key", "s3cr3t"), ("X-Site", "a b")))
    built = build_request(config, request(tls=TLS))
    assert built.endswith(
        b"Auth-SSL-Cipher: TLS_AES_256_GCM_SHA384\r\nX-Auth-Key: s3cr3t\r\nX-Site: a b\r\n\r\n"
    )


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown auth method"):
        request(method="digest-md5")


def test_a_crlf_in_the_smtp_envelope_is_our_bug_and_raises() -> None:
    req = request(Protocol.SMTP, method="none", smtp_from=b"MAIL FROM:<>\r\nX: y")
    with pytest.raises(ValueError, match="Auth-SMTP-From"):
        build_request(server(Protocol.SMTP), req)


def test_password_is_not_in_the_repr() -> None:
    assert "secret" not in repr(request())


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (URL, "127.0.0.1:9000"),
        (HttpURL(host="::1", port=80, uri="/", host_header="localhost"), "[::1]:80"),
        (
            HttpURL(host="", port=0, uri="/a", host_header="localhost", unix_path="/run/a.sock"),
            "unix:/run/a.sock",
        ),
    ],
)
def test_auth_peer_name_as_nginx_logs_it(url: HttpURL, name: str) -> None:
    assert auth_peer_name(url) == name
