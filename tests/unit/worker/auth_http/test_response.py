"""AuthResponseParser reads the auth server's answer by nginx's rules
(``ngx_mail_auth_http_process_headers`` and its sleep handler in ngx_mail_auth_http_module.c)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate.config.model import Protocol
from mailgate.worker.auth_http.request import AuthRequest
from mailgate.worker.auth_http.response import (
    MAX_RESPONSE,
    AuthResponseParser,
    AuthResult,
    AuthWait,
    Fail,
    Invalid,
    Ok,
)
from mailgate.worker.sansio import NEED_DATA

PEER = "127.0.0.1:9000"
OK_HEADERS = b"Auth-Status: OK\r\nAuth-Server: 10.0.0.2\r\nAuth-Port: 143\r\n"


def parser(
    protocol: Protocol = Protocol.IMAP, method: str = "plain", salt: bytes = b""
) -> AuthResponseParser:
    req = AuthRequest(
        protocol=protocol,
        method=method,
        user=b"joe",
        password=b"secret",
        client_ip="192.0.2.7",
        salt=salt,
    )
    return AuthResponseParser(req, PEER)


def answer(
    response: bytes, protocol: Protocol = Protocol.IMAP, method: str = "plain", salt: bytes = b""
) -> AuthResult:
    result = parser(protocol, method, salt).feed(response)
    assert result is not NEED_DATA
    return result


def test_ok_with_server_and_port_logs_in_with_the_client_credentials() -> None:
    result = answer(b"HTTP/1.0 200 OK\r\n" + OK_HEADERS + b"\r\n")
    assert result == Ok("10.0.0.2", 143, b"joe", b"secret", "10.0.0.2:143")


def test_status_code_is_ignored() -> None:
    result = answer(b"HTTP/1.1 500 Whatever\r\n" + OK_HEADERS + b"\r\n")
    assert isinstance(result, Ok)


def test_response_without_status_line_is_parsed_as_headers() -> None:
    assert isinstance(answer(OK_HEADERS + b"\r\n"), Ok)


def test_bare_lf_line_ends_are_accepted() -> None:
    assert isinstance(answer(OK_HEADERS.replace(b"\r\n", b"\n") + b"\n"), Ok)


def test_body_after_the_empty_line_is_ignored() -> None:
    assert isinstance(answer(OK_HEADERS + b"\r\nAuth-Status: nope\r\ngarbage\x00"), Ok)


def test_header_names_are_case_insensitive_and_values_trimmed() -> None:
    result = answer(b"auth-status:   OK  \r\nAUTH-SERVER:10.0.0.2 \r\nauth-PORT: 143\r\n\r\n")
    assert isinstance(result, Ok)
    assert (result.server, result.port) == ("10.0.0.2", 143)


def test_auth_status_ok_is_case_sensitive() -> None:
    result = answer(b"Auth-Status: ok\r\n\r\n", Protocol.POP3)
    assert result == Fail(b"ok")


def test_unknown_headers_are_ignored() -> None:
    assert isinstance(answer(b"X-Foo: bar\r\nNameOnly\r\n" + OK_HEADERS + b"\r\n"), Ok)


def test_user_and_password_overrides() -> None:
    result = answer(OK_HEADERS + b"Auth-User: joe@backend\r\nAuth-Pass: other pass\r\n\r\n")
    assert isinstance(result, Ok)
    assert (result.user, result.password) == (b"joe@backend", b"other pass")


def test_ipv6_server_is_accepted() -> None:
    result = answer(b"Auth-Status: OK\r\nAuth-Server: 2001:DB8::2\r\nAuth-Port: 993\r\n\r\n")
    assert result == Ok("2001:db8::2", 993, b"joe", b"secret", "2001:DB8::2:993")


def test_data_fed_in_single_bytes_gives_the_same_answer() -> None:
    p = parser()
    response = b"HTTP/1.0 200 OK\r\n" + OK_HEADERS + b"\r\n"
    results = [p.feed(bytes([octet])) for octet in response]
    assert results[:-1] == [NEED_DATA] * (len(response) - 1)
    assert isinstance(results[-1], Ok)


@pytest.mark.parametrize(
    ("response", "log"),
    [
        (b"Auth-Status: OK\r\n\r\n", f"auth http server {PEER} did not send server or port"),
        (
            b"Auth-Status: OK\r\nAuth-Server: 10.0.0.2\r\n\r\n",
            f"auth http server {PEER} did not send server or port",
        ),
        (
            b"Auth-Status: OK\r\nAuth-Server: mail.example\r\nAuth-Port: 143\r\n\r\n",
            f'auth http server {PEER} sent invalid server address:"mail.example"',
        ),
        (
            b"Auth-Status: OK\r\nAuth-Server: 10.0.0.256\r\nAuth-Port: 143\r\n\r\n",
            f'auth http server {PEER} sent invalid server address:"10.0.0.256"',
        ),
        (
            b"Auth-Status: OK\r\nAuth-Server: 10.0.0.2\r\nAuth-Port: 0\r\n\r\n",
            f'auth http server {PEER} sent invalid server port:"0"',
        ),
        (
            b"Auth-Status: OK\r\nAuth-Server: 10.0.0.2\r\nAuth-Port: 65536\r\n\r\n",
            f'auth http server {PEER} sent invalid server port:"65536"',
        ),
        (
            b"Auth-Status: OK\r\nAuth-Server: 10.0.0.2\r\nAuth-Port: 14 3\r\n\r\n",
            f'auth http server {PEER} sent invalid server port:"14 3"',
        ),
        (b"HTTP/1.0 200 OK\rX", f"auth http server {PEER} sent invalid response"),
        (b"Auth Status: OK\r\n", f"auth http server {PEER} sent invalid header in response"),
        (b" Auth-Status: OK\r\n", f"auth http server {PEER} sent invalid header in response"),
        (b"-Auth: x\r\n", f"auth http server {PEER} sent invalid header in response"),
        (b"Auth-Status: O\rK\r\n", f"auth http server {PEER} sent invalid header in response"),
        (b"Auth_Status", f"auth http server {PEER} sent invalid header in response"),
        (b"\rX", f"auth http server {PEER} sent invalid header in response"),
    ],
)
def test_invalid_answers_are_logged_as_nginx(response: bytes, log: str) -> None:
    assert answer(response) == Invalid(log)


def test_a_bad_header_byte_is_refused_before_the_line_ends() -> None:
    assert parser().feed(b"Auth-St@") == Invalid(
        f"auth http server {PEER} sent invalid header in response"
    )


@pytest.mark.parametrize("method", ["apop", "cram-md5"])
@pytest.mark.parametrize("protocol", [Protocol.IMAP, Protocol.POP3])
def test_apop_and_cram_md5_need_auth_pass_for_imap_and_pop3(
    method: str, protocol: Protocol
) -> None:
    result = answer(OK_HEADERS + b"\r\n", protocol, method=method, salt=b"<1.2@h>")
    assert result == Invalid(f"auth http server {PEER} did not send password")


def test_apop_with_auth_pass_logs_in_with_the_plaintext() -> None:
    result = answer(
        OK_HEADERS + b"Auth-Pass: plain\r\n\r\n", Protocol.POP3, method="apop", salt=b"<s>"
    )
    assert isinstance(result, Ok)
    assert result.password == b"plain"


def test_smtp_cram_md5_without_auth_pass_is_ok_without_password() -> None:
    result = answer(OK_HEADERS + b"\r\n", Protocol.SMTP, method="cram-md5", salt=b"<s>")
    assert isinstance(result, Ok)
    assert result.password is None


def test_error_status_is_a_failure_with_its_text() -> None:
    result = answer(b"HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\n\r\n")
    assert result == Fail(b"Invalid login or password")


def test_failure_with_wait_and_smtp_error_code() -> None:
    response = b"Auth-Status: Temporary error\r\nAuth-Wait: 3\r\nAuth-Error-Code: 451 4.3.0\r\n\r\n"
    result = answer(response, Protocol.SMTP)
    assert result == Fail(b"Temporary error", 3, b"451 4.3.0")
    assert isinstance(result, Fail)
    assert not result.closes_session
    assert result.log_message == 'client login failed: "Temporary error"'


def test_non_numeric_auth_wait_is_ignored() -> None:
    assert answer(b"Auth-Status: no\r\nAuth-Wait: soon\r\n\r\n") == Fail(b"no", 0)


def test_failure_wins_over_a_later_ok() -> None:
    assert answer(b"Auth-Status: no\r\n" + OK_HEADERS + b"\r\n") == Fail(b"no")


def test_empty_status_is_a_failure_for_pop3_but_not_for_smtp() -> None:
    assert answer(b"Auth-Status:\r\n\r\n", Protocol.POP3) == Fail(b"")
    assert answer(b"Auth-Status:\r\n\r\n", Protocol.SMTP) == Invalid(
        f"auth http server {PEER} did not send server or port"
    )


def test_wait_status_asks_again() -> None:
    assert answer(b"Auth-Status: WAIT\r\nAuth-Wait: 2\r\n\r\n") == AuthWait(2)
    assert answer(b"Auth-Status: WAIT\r\n\r\n") == AuthWait(0)


def test_wait_status_with_an_error_and_a_delay_asks_again_as_nginx() -> None:
    response = b"Auth-Status: WAIT\r\nAuth-Status: busy\r\nAuth-Wait: 1\r\n\r\n"
    assert answer(response) == AuthWait(1)


def test_response_header_cap_is_1024_bytes() -> None:
    p = parser()
    filler = b"X-Filler: " + b"a" * 100 + b"\r\n"
    results = [p.feed(filler) for _ in range(10)]
    assert results[:9] == [NEED_DATA] * 9
    assert results[9] == Invalid(None)
    assert p.buffered == MAX_RESPONSE


def test_a_response_ending_exactly_at_1024_bytes_is_read() -> None:
    body = OK_HEADERS + b"\r\n"
    padding = b"X: " + b"a" * (MAX_RESPONSE - len(body) - 5) + b"\r\n"
    response = padding + body
    assert len(response) == MAX_RESPONSE
    assert isinstance(parser().feed(response), Ok)


def test_eof_before_the_end_of_headers_is_an_internal_error_without_log() -> None:
    p = parser()
    assert p.feed(OK_HEADERS) is NEED_DATA
    assert p.eof() == Invalid(None)


def test_outcome_is_final() -> None:
    p = parser()
    first = p.feed(OK_HEADERS + b"\r\n")
    assert p.feed(b"Auth-Status: no\r\n\r\n") == first
    assert p.eof() == first


@given(st.lists(st.binary(max_size=300), max_size=12))
def test_parser_never_raises_and_never_holds_more_than_1024_bytes(chunks: list[bytes]) -> None:
    p = parser()
    for chunk in chunks:
        p.feed(chunk)
        assert p.buffered <= MAX_RESPONSE
    p.eof()


@given(st.binary(max_size=2000))
def test_parser_never_raises_on_headers_after_a_status_line(data: bytes) -> None:
    p = parser()
    p.feed(b"HTTP/1.0 200 OK\r\nAuth-Status: ")
    p.feed(data)
    assert p.buffered <= MAX_RESPONSE
