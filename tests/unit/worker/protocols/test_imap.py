"""IMAP before login, byte for byte as nginx (ngx_mail_imap_handler.c, t/mail_imap.t)."""

from __future__ import annotations

import base64

import pytest

from mailgate.config import model
from mailgate.worker.protocols import LocalProtocolError, replies

OFF, ON, ONLY = model.StartTLS.OFF, model.StartTLS.ON, model.StartTLS.ONLY
CAPS = b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_greeting_is_nginx_banner(imap) -> None:
    assert imap(greet=False).greet() == b"* OK IMAP4 ready\r\n"


def test_capability_default(imap) -> None:
    assert imap().talk(b"a CAPABILITY\r\n") == CAPS + b" AUTH=PLAIN\r\na OK completed\r\n"


def test_capability_lists_auth_methods_in_nginx_order(imap) -> None:
    client = imap(imap_auth=("external", "cram-md5", "login", "plain"))
    assert client.talk(b"a CAPABILITY\r\n").startswith(
        CAPS + b" AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5 AUTH=EXTERNAL\r\n"
    )


def test_capability_uses_configured_extensions_verbatim(imap) -> None:
    client = imap(imap_capabilities=("SEE-THIS",))
    assert client.talk(b"a CAPABILITY\r\n") == (
        b"* CAPABILITY SEE-THIS AUTH=PLAIN\r\na OK completed\r\n"
    )


def test_capability_with_starttls_on_appends_starttls(imap) -> None:
    assert (
        imap(starttls=ON).talk(b"a CAPABILITY\r\n").startswith(CAPS + b" AUTH=PLAIN STARTTLS\r\n")
    )


def test_capability_with_starttls_only_advertises_logindisabled(imap) -> None:
    assert (
        imap(starttls=ONLY)
        .talk(b"a CAPABILITY\r\n")
        .startswith(CAPS + b" STARTTLS LOGINDISABLED\r\n")
    )


@pytest.mark.parametrize("mode", [ON, ONLY])
def test_capability_after_tls_drops_starttls(imap, mode) -> None:
    client = imap(starttls=mode)
    client.talk(b"a STARTTLS\r\n")
    client.machine.tls_started()
    assert client.talk(b"b CAPABILITY\r\n").startswith(CAPS + b" AUTH=PLAIN\r\n")


def test_capability_on_implicit_tls_listener_has_no_starttls(imap) -> None:
    assert (
        imap(starttls=ONLY, tls=True)
        .talk(b"a CAPABILITY\r\n")
        .startswith(CAPS + b" AUTH=PLAIN\r\n")
    )


def test_noop_completes(imap) -> None:
    assert imap().talk(b"A1 noop\r\n") == b"A1 " + replies.IMAP_OK


def test_logout_says_bye_and_closes(imap) -> None:
    client = imap()
    assert client.talk(b"a LOGOUT\r\n") == b"* BYE\r\na OK completed\r\n"
    assert client.closed


def test_id_is_an_invalid_command_as_in_nginx(imap) -> None:
    assert imap().talk(b'a ID ("name" "x")\r\n') == b"a BAD invalid command\r\n"


def test_line_without_valid_tag_gets_star_reply(imap) -> None:
    assert imap().talk(b"\r\nfoo+ NOOP\r\n") == b"* BAD invalid command\r\n" * 2


def test_login_yields_plain_credentials_with_tag(imap) -> None:
    client = imap()
    assert client.talk(b"a1 LOGIN user secret\r\n") == b""
    creds = client.login.credentials
    assert (creds.method, creds.user, creds.password, creds.tag) == (
        "plain",
        b"user",
        b"secret",
        b"a1 ",
    )
    assert creds.attempt == 1 and creds.salt is None


def test_login_with_quoted_strings_and_literals(imap) -> None:
    client = imap()
    assert client.talk(b'a LOGIN "us er" {6}\r\n') == replies.IMAP_NEXT
    client.talk(b"se\r\nt\0\r\n")
    assert client.login.credentials.user == b"us er"
    assert client.login.credentials.password == b"se\r\nt\0"


def test_login_with_wrong_argument_count_is_invalid(imap) -> None:
    assert imap().talk(b'a LOGIN user\r\nb LOGIN "" x\r\n') == (
        b"a BAD invalid command\r\nb BAD invalid command\r\n"
    )


def test_authenticate_plain_with_continuation(imap) -> None:
    client = imap()
    assert client.talk(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    client.talk(b64(b"\0user\0pass") + b"\r\n")
    creds = client.login.credentials
    assert (creds.user, creds.password, creds.tag) == (b"user", b"pass", b"a ")


def test_authenticate_plain_initial_response(imap) -> None:
    client = imap()
    client.talk(b"a AUTHENTICATE PLAIN " + b64(b"\0u\0p") + b"\r\n")
    assert client.login.credentials.user == b"u"


def test_authenticate_login_prompts_username_then_password(imap) -> None:
    client = imap()
    assert client.talk(b"a AUTHENTICATE LOGIN\r\n") == b"+ VXNlcm5hbWU6\r\n"
    assert client.talk(b64(b"user") + b"\r\n") == b"+ UGFzc3dvcmQ6\r\n"
    client.talk(b64(b"pass") + b"\r\n")
    creds = client.login.credentials
    assert (creds.method, creds.user, creds.password) == ("plain", b"user", b"pass")


def test_authenticate_login_with_initial_username(imap) -> None:
    client = imap()
    assert client.talk(b"a AUTHENTICATE LOGIN " + b64(b"u") + b"\r\n") == replies.IMAP_PASSWORD


def test_authenticate_login_bad_username_gets_untagged_bad_as_nginx(imap) -> None:
    client = imap()
    client.talk(b"a AUTHENTICATE LOGIN\r\n")
    assert client.talk(b"*\r\n") == b"BAD invalid command\r\n"
    assert client.talk(b"b NOOP\r\n") == b"b OK completed\r\n"


def test_authenticate_cancel_star_is_invalid_command(imap) -> None:
    client = imap()
    client.talk(b"a AUTHENTICATE PLAIN\r\n")
    assert client.talk(b"*\r\n") == b"a BAD invalid command\r\n"


def test_authenticate_cram_md5_refused_unless_enabled(imap) -> None:
    assert imap().talk(b"a AUTHENTICATE CRAM-MD5\r\n") == b"a BAD invalid command\r\n"


def test_authenticate_cram_md5_challenge_is_base64_salt(imap) -> None:
    client = imap(imap_auth=("plain", "cram-md5"))
    salt = client.machine.salt
    assert client.talk(b"a AUTHENTICATE CRAM-MD5\r\n") == b"+ " + b64(salt) + b"\r\n"
    client.talk(b64(b"user " + b"f" * 32) + b"\r\n")
    creds = client.login.credentials
    assert (creds.method, creds.password, creds.salt) == ("cram-md5", b"f" * 32, salt)


def test_authenticate_external_prompts_for_authzid(imap) -> None:
    client = imap(imap_auth=("external",))
    assert client.talk(b"a AUTHENTICATE EXTERNAL\r\n") == replies.IMAP_USERNAME
    client.talk(b64(b"cn=user") + b"\r\n")
    creds = client.login.credentials
    assert (creds.method, creds.user, creds.password) == ("external", b"cn=user", b"")


def test_authenticate_external_refused_unless_enabled(imap) -> None:
    assert imap().talk(b"a AUTHENTICATE EXTERNAL\r\n") == b"a BAD invalid command\r\n"


@pytest.mark.parametrize("command", [b"a LOGIN u p\r\n", b"a AUTHENTICATE PLAIN\r\n"])
def test_starttls_only_refuses_auth_before_tls(imap, command) -> None:
    client = imap(starttls=ONLY)
    assert client.talk(command) == b"a BAD invalid command\r\n"
    assert not client.logins


def test_starttls_only_allows_login_after_tls(imap) -> None:
    client = imap(starttls=ONLY)
    client.talk(b"a STARTTLS\r\n")
    client.machine.tls_started()
    client.talk(b"b LOGIN u p\r\n")
    assert client.login.credentials.user == b"u"


def test_starttls_replies_ok_then_asks_for_handshake(imap) -> None:
    client = imap(starttls=ON)
    assert client.talk(b"a STARTTLS\r\n") == b"a OK completed\r\n"
    assert client.starttls == 1


def test_starttls_discards_bytes_pipelined_after_it(imap) -> None:
    client = imap(starttls=ON)
    client.talk(b"a STARTTLS\r\nb LOGIN injected pw\r\n")
    client.machine.tls_started()
    assert client.talk(b"c NOOP\r\n") == b"c OK completed\r\n"
    assert not client.logins


def test_plaintext_before_handshake_is_refused(imap) -> None:
    client = imap(starttls=ON)
    client.talk(b"a STARTTLS\r\n")
    with pytest.raises(LocalProtocolError):
        client.machine.receive_data(b"b NOOP\r\n")


@pytest.mark.parametrize("settings", [{"starttls": OFF}, {"starttls": ON, "tls": True}])
def test_starttls_is_invalid_when_off_or_already_tls(imap, settings) -> None:
    assert imap(**settings).talk(b"a STARTTLS\r\n") == b"a BAD invalid command\r\n"


def test_login_failed_replies_tagged_no_and_allows_retry(imap) -> None:
    client = imap()
    client.talk(b"a1 LOGIN u p\r\n")
    assert client.machine.login_failed(b"Invalid login", None) == b"a1 NO Invalid login\r\n"
    client.talk(b"a2 LOGIN u q\r\n")
    assert client.login.credentials.attempt == 2


def test_pipelined_commands_are_answered_in_order(imap) -> None:
    assert imap().talk(b"a NOOP\r\nb CAPABILITY\r\nc NOOP\r\n") == (
        b"a OK completed\r\n" + CAPS + b" AUTH=PLAIN\r\nb OK completed\r\nc OK completed\r\n"
    )


def test_bytes_pipelined_after_login_are_kept_for_the_backend(imap) -> None:
    client = imap()
    client.talk(b"a LOGIN u p\r\nb SELECT INBOX\r\n")
    assert client.machine.take_pipelined() == b"b SELECT INBOX\r\n"


def test_too_long_command_is_refused_and_closes(imap) -> None:
    client = imap(imap_client_buffer=64)
    assert client.talk(b"a LOGIN " + b"x" * 100) == b"a BAD invalid command\r\n"
    assert client.closed


def test_oversized_literal_is_refused_with_bounded_buffer(imap) -> None:
    client = imap(imap_client_buffer=64)
    assert client.talk(b"a LOGIN {100000}\r\n") == replies.IMAP_NEXT
    assert client.talk(b"x" * 100000) == b"a BAD invalid command\r\n"
    assert client.closed


def test_max_errors_closes_after_the_last_error_reply(imap) -> None:
    client = imap(max_errors=2)
    assert client.talk(b"a FOO\r\nb BAR\r\nc NOOP\r\n") == b"a BAD invalid command\r\n" * 1 + (
        b"b BAD invalid command\r\n"
    )
    assert client.closed


def test_refused_known_commands_do_not_count_as_errors(imap) -> None:
    client = imap(max_errors=1, starttls=ONLY)
    assert client.talk(b"a LOGIN u p\r\nb NOOP\r\n") == (
        b"a BAD invalid command\r\nb OK completed\r\n"
    )


def test_invalid_command_with_non_sync_literal_closes(imap) -> None:
    client = imap()
    assert client.talk(b"a SELECT {3+}\r\nabc\r\n") == b"a BAD invalid command\r\n"
    assert client.closed


def test_invalid_command_resyncs_at_next_line(imap) -> None:
    assert imap().talk(b"a SELECT {3}\r\nb NOOP\r\n") == (
        b"a BAD invalid command\r\nb OK completed\r\n"
    )


def test_eof_closes_silently(imap) -> None:
    client = imap()
    client.talk(b"a NO")
    assert client.eof() == b""
    assert client.closed


def test_internal_error_line(imap) -> None:
    assert imap().machine.internal_error() == b"* BAD internal server error\r\n"
