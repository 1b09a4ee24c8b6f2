"""SASL decoding follows nginx's ngx_decode_base64 and ngx_mail_auth_* helpers."""

from __future__ import annotations

import base64

import pytest

from mailgate.worker.protocols import sasl


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_base64_padding_is_optional() -> None:
    assert sasl.decode_base64(b"dXNlcg") == b"user"


def test_base64_ignores_everything_after_the_first_equals_sign() -> None:
    assert sasl.decode_base64(b"dXNlcg==!!not base64") == b"user"


@pytest.mark.parametrize("text", [b"*", b"dXNlc", b"dXN lcg==", b"dXNl\x00cg=="])
def test_base64_refuses_bad_alphabet_and_4n_plus_1_lengths(text: bytes) -> None:
    assert sasl.decode_base64(text) is None


def test_empty_response_decodes_to_empty() -> None:
    assert sasl.decode_base64(b"") == b""


def test_plain_drops_authzid_and_keeps_nul_in_password() -> None:
    assert sasl.plain(b64(b"admin\0user\0pa\0ss")) == (b"user", b"pa\0ss")


def test_plain_keeps_crlf_and_spaces_in_credentials_raw() -> None:
    assert sasl.plain(b64(b"\0us er\r\nX: y\0p\r\nw")) == (b"us er\r\nX: y", b"p\r\nw")


@pytest.mark.parametrize("decoded", [b"user", b"\0user", b"user\0", b"\0"])
def test_plain_without_two_nul_separators_is_invalid(decoded: bytes) -> None:
    assert sasl.plain(b64(decoded)) is None


def test_cram_md5_splits_user_and_32_char_digest_at_first_space() -> None:
    digest = b"0123456789abcdef0123456789abcdef"
    assert sasl.cram_md5(b64(b"user " + digest)) == (b"user", digest)
    assert sasl.cram_md5(b64(b"a user " + digest)) is None  # the digest would be 37 bytes


def test_cram_md5_with_short_digest_is_invalid() -> None:
    assert sasl.cram_md5(b64(b"user 0123")) is None


def test_cram_md5_challenge_is_prefix_base64_salt_crlf() -> None:
    assert sasl.cram_md5_challenge(b"334 ", b"<1.2@h>") == b"334 PDEuMkBoPg==\r\n"


@pytest.mark.parametrize(
    ("args", "mechanism"),
    [
        ([b"login"], sasl.Mechanism.LOGIN),
        ([b"LOGIN", b"dXNlcg=="], sasl.Mechanism.LOGIN_USERNAME),
        ([b"Plain"], sasl.Mechanism.PLAIN),
        ([b"PLAIN", b"x"], sasl.Mechanism.PLAIN_IR),
        ([b"CRAM-MD5"], sasl.Mechanism.CRAM_MD5),
        ([b"EXTERNAL"], sasl.Mechanism.EXTERNAL),
        ([b"EXTERNAL", b"x"], sasl.Mechanism.EXTERNAL_IR),
        ([b"CRAM-MD5", b"x"], None),
        ([b"LOGIN", b"a", b"b"], None),
        ([b"GSSAPI"], None),
        ([], None),
    ],
)
def test_mechanism_table(args: list[bytes], mechanism: sasl.Mechanism | None) -> None:
    assert sasl.parse_mechanism(args) is mechanism
