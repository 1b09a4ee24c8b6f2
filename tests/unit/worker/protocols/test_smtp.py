"""SMTP before login, byte for byte as nginx (ngx_mail_smtp_handler.c, t/mail_smtp.t)."""

from __future__ import annotations

import base64

import pytest

from mailgate.config import model
from mailgate.worker.protocols import replies

ON, ONLY = model.StartTLS.ON, model.StartTLS.ONLY


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_greeting_names_the_server(smtp) -> None:
    assert smtp(greet=False).greet() == b"220 mail.example ESMTP ready\r\n"


def test_helo_replies_server_name(smtp) -> None:
    assert smtp().talk(b"HELO client\r\n") == b"250 mail.example\r\n"


def test_ehlo_default(smtp) -> None:
    assert smtp().talk(b"EHLO client\r\n") == b"250-mail.example\r\n250 AUTH PLAIN LOGIN\r\n"


def test_ehlo_lists_capabilities_then_auth_in_nginx_order(smtp) -> None:
    client = smtp(
        smtp_capabilities=("SIZE 10485760", "8BITMIME"),
        smtp_auth=("external", "cram-md5", "login", "plain", "none"),
    )
    assert client.talk(b"EHLO c\r\n") == (
        b"250-mail.example\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
        b"250 AUTH PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n"
    )


def test_ehlo_with_only_none_has_no_auth_line(smtp) -> None:
    client = smtp(smtp_auth=("none",), smtp_capabilities=("PIPELINING",))
    assert client.talk(b"EHLO c\r\n") == b"250-mail.example\r\n250 PIPELINING\r\n"


def test_ehlo_with_starttls_on_ends_with_starttls(smtp) -> None:
    assert smtp(starttls=ON).talk(b"EHLO c\r\n") == (
        b"250-mail.example\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"
    )


def test_ehlo_with_starttls_only_hides_auth(smtp) -> None:
    client = smtp(starttls=ONLY, smtp_capabilities=("8BITMIME",))
    assert client.talk(b"EHLO c\r\n") == b"250-mail.example\r\n250-8BITMIME\r\n250 STARTTLS\r\n"


def test_helo_without_argument_is_invalid_argument(smtp) -> None:
    assert smtp().talk(b"HELO\r\nEHLO a b\r\n") == replies.SMTP_INVALID_ARGUMENT * 2


@pytest.mark.parametrize("command", [b"NOOP", b"RSET"])
def test_noop_and_rset_are_ok(smtp, command) -> None:
    assert smtp().talk(command + b"\r\n") == b"250 2.0.0 OK\r\n"


def test_quit_says_bye_and_closes(smtp) -> None:
    client = smtp()
    assert client.talk(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    assert client.closed


@pytest.mark.parametrize("verb", [b"VRFY x", b"EXPN x", b"HELP", b"DATA"])
def test_other_verbs_are_invalid(smtp, verb) -> None:
    assert smtp().talk(verb + b"\r\n") == b"500 5.5.1 Invalid command\r\n"


def test_mail_requires_authentication(smtp) -> None:
    assert smtp().talk(b"MAIL FROM:<a@b>\r\n") == b"530 5.7.1 Authentication required\r\n"


def test_auth_plain_with_nul_separators_decodes_exactly(smtp) -> None:
    client = smtp()
    client.talk(b"EHLO c\r\nAUTH PLAIN " + b64(b"authz\0us\r\ner\0p\0w") + b"\r\n")
    creds = client.login.credentials
    assert (creds.method, creds.user, creds.password) == ("plain", b"us\r\ner", b"p\0w")
    assert (creds.helo, creds.esmtp) == (b"c", True)


def test_auth_plain_continuation(smtp) -> None:
    client = smtp()
    assert client.talk(b"AUTH PLAIN\r\n") == b"334 \r\n"
    client.talk(b64(b"\0u\0p") + b"\r\n")
    assert client.login.credentials.user == b"u"


def test_auth_login_prompts_and_ms_xlogin_initial_user(smtp) -> None:
    client = smtp()
    assert client.talk(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert client.talk(b64(b"u") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert smtp().talk(b"AUTH LOGIN " + b64(b"u") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"


def test_auth_cram_md5_challenge(smtp) -> None:
    client = smtp(smtp_auth=("cram-md5",))
    assert client.talk(b"AUTH CRAM-MD5\r\n") == b"334 " + b64(client.machine.salt) + b"\r\n"


def test_auth_without_mechanism_is_invalid_argument(smtp) -> None:
    assert smtp().talk(b"AUTH\r\n") == b"501 5.5.4 Invalid argument\r\n"


def test_auth_bad_base64_is_invalid(smtp) -> None:
    client = smtp()
    client.talk(b"AUTH PLAIN\r\n")
    assert client.talk(b"*\r\n") == replies.SMTP_INVALID_COMMAND
    assert client.talk(b"NOOP\r\n") == replies.SMTP_OK


def test_starttls_only_refuses_auth(smtp) -> None:
    assert smtp(starttls=ONLY).talk(b"AUTH PLAIN\r\n") == replies.SMTP_INVALID_COMMAND


def test_starttls_replies_220_and_forgets_helo_and_pipelined_bytes(smtp) -> None:
    client = smtp(starttls=ON)
    assert client.talk(b"EHLO c\r\nSTARTTLS\r\nAUTH PLAIN " + b64(b"\0x\0y") + b"\r\n") == (
        b"250-mail.example\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n220 2.0.0 Start TLS\r\n"
    )
    assert client.starttls == 1 and not client.logins
    client.machine.tls_started()
    client.talk(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n")
    assert client.login.credentials.helo == b""


def test_auth_none_collects_mail_and_rcpt_lines(smtp) -> None:
    client = smtp(smtp_auth=("none",))
    assert client.talk(b"HELO c\r\nMAIL FROM: <a@b> SIZE=5\r\n") == (
        b"250 mail.example\r\n250 2.0.0 OK\r\n"
    )
    client.talk(b"RCPT TO:<x@y>\r\n")
    creds = client.login.credentials
    assert (creds.method, creds.user, creds.password) == ("none", b"", b"")
    assert (creds.helo, creds.esmtp) == (b"c", False)
    assert (creds.mail_from, creds.rcpt_to) == (b"MAIL FROM: <a@b> SIZE=5", b"RCPT TO:<x@y>")


def test_auth_none_is_not_gated_by_starttls_only(smtp) -> None:
    client = smtp(smtp_auth=("none",), starttls=ONLY)
    client.talk(b"MAIL FROM:<>\r\nRCPT TO:<p@q>\r\n")
    assert client.login.credentials.method == "none"


def test_rcpt_before_mail_and_second_mail_are_bad_sequence(smtp) -> None:
    client = smtp(smtp_auth=("none",))
    assert client.talk(b"RCPT TO:<x@y>\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n") == (
        replies.SMTP_BAD_SEQUENCE + replies.SMTP_OK + replies.SMTP_BAD_SEQUENCE
    )


def test_rset_forgets_mail_from(smtp) -> None:
    client = smtp(smtp_auth=("none",))
    assert client.talk(b"MAIL FROM:<>\r\nRSET\r\nRCPT TO:<x@y>\r\n").endswith(
        replies.SMTP_BAD_SEQUENCE
    )


def test_login_failed_uses_default_or_auth_error_code(smtp) -> None:
    client = smtp()
    client.talk(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n")
    assert client.machine.login_failed(b"Bad", None) == b"535 5.7.0 Bad\r\n"
    client.talk(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n")
    assert client.machine.login_failed(b"Later", b"451 4.3.0") == b"451 4.3.0 Later\r\n"


def test_early_talker_gets_503_and_close_when_greeting_is_delayed(smtp) -> None:
    client = smtp(greet=False, smtp_greeting_delay=2.0)
    assert client.drain() == b""  # nothing yet: the caller waits for the delay
    assert client.talk(b"EHLO spam\r\n") == replies.SMTP_INVALID_PIPELINING
    assert client.closed


def test_quiet_client_gets_greeting_after_delay(smtp) -> None:
    client = smtp(greet=False, smtp_greeting_delay=2.0)
    assert client.drain() == b""
    assert client.greet() == b"220 mail.example ESMTP ready\r\n"
    assert client.talk(b"HELO c\r\n") == b"250 mail.example\r\n"


def test_data_before_greeting_without_delay_waits_for_greeting(smtp) -> None:
    client = smtp(greet=False)
    assert client.talk(b"HELO c\r\n") == b""
    client.greet()
    assert client.drain() == b"250 mail.example\r\n"


def test_too_long_command_closes(smtp) -> None:
    client = smtp(smtp_client_buffer=32)
    assert client.talk(b"HELO " + b"x" * 40) == replies.SMTP_INVALID_COMMAND
    assert client.closed


def test_max_errors_counts_only_parser_errors(smtp) -> None:
    client = smtp(max_errors=2)
    assert client.talk(b"VRFY a\r\nFOO\r\nNOOP\r\nBAR\r\nNOOP\r\n") == (
        replies.SMTP_INVALID_COMMAND * 2 + replies.SMTP_OK + replies.SMTP_INVALID_COMMAND
    )
    assert client.closed


def test_pipelined_bytes_after_auth_are_kept_for_the_backend(smtp) -> None:
    client = smtp()
    client.talk(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\nMAIL FROM:<a@b>\r\n")
    assert client.machine.take_pipelined() == b"MAIL FROM:<a@b>\r\n"


def test_internal_error_line(smtp) -> None:
    assert smtp().machine.internal_error() == b"451 4.3.2 Internal server error\r\n"
