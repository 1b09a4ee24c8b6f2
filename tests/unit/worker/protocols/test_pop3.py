"""POP3 before login, byte for byte as nginx (ngx_mail_pop3_handler.c, t/mail_pop3.t)."""

from __future__ import annotations

import base64
import re

import pytest

from mailgate.config import model
from mailgate.worker.protocols import replies
from mailgate.worker.protocols.pop3 import Pop3Machine

ON, ONLY = model.StartTLS.ON, model.StartTLS.ONLY
HEAD = b"+OK Capability list follows\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_greeting_without_apop_or_cram_md5(pop3) -> None:
    assert pop3(greet=False).greet() == b"+OK POP3 ready\r\n"


@pytest.mark.parametrize("method", ["apop", "cram-md5"])
def test_greeting_carries_salt_with_apop_or_cram_md5(pop3, method) -> None:
    client = pop3(greet=False, pop3_auth=("plain", method))
    assert client.greet() == b"+OK POP3 ready " + client.machine.salt + b"\r\n"


def test_capa_default(pop3) -> None:
    assert pop3().talk(b"CAPA\r\n") == HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n"


def test_capa_sasl_line_in_nginx_order(pop3) -> None:
    client = pop3(pop3_auth=("external", "cram-md5", "apop", "plain"))
    assert b"SASL PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n" in client.talk(b"CAPA\r\n")


def test_capa_with_starttls_on_adds_stls(pop3) -> None:
    assert pop3(starttls=ON).talk(b"CAPA\r\n") == (
        HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n"
    )


def test_capa_with_starttls_only_hides_user_and_sasl(pop3) -> None:
    assert pop3(starttls=ONLY).talk(b"CAPA\r\n") == HEAD + b"TOP\r\nUIDL\r\nSTLS\r\n.\r\n"


def test_capa_after_user_is_the_plain_list(pop3) -> None:
    client = pop3(starttls=ON)
    assert client.talk(b"USER u\r\nCAPA\r\n") == (
        b"+OK\r\n" + HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n"
    )


def test_auth_without_mechanism_lists_methods(pop3) -> None:
    client = pop3(pop3_auth=("plain", "cram-md5"))
    assert client.talk(b"AUTH\r\n") == (
        b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n.\r\n"
    )


def test_user_pass_yields_plain_credentials_with_spaces(pop3) -> None:
    client = pop3()
    assert client.talk(b"USER a user\r\n") == b"+OK\r\n"
    client.talk(b"PASS  pass word \r\n")
    creds = client.login.credentials
    assert (creds.method, creds.user, creds.password) == ("plain", b"a user", b"pass word ")


def test_pass_before_user_is_invalid(pop3) -> None:
    assert pop3().talk(b"PASS x\r\n") == b"-ERR invalid command\r\n"


def test_apop_refused_unless_enabled(pop3) -> None:
    assert pop3().talk(b"APOP u " + b"0" * 32 + b"\r\n") == replies.POP3_INVALID_COMMAND


def test_apop_yields_digest_and_salt(pop3) -> None:
    client = pop3(pop3_auth=("apop",))
    client.talk(b"APOP user " + b"d" * 32 + b"\r\n")
    creds = client.login.credentials
    assert (creds.method, creds.user, creds.password, creds.salt) == (
        "apop",
        b"user",
        b"d" * 32,
        client.machine.salt,
    )


def test_auth_plain_continuation_and_initial_response(pop3) -> None:
    client = pop3()
    assert client.talk(b"AUTH PLAIN\r\n") == b"+ \r\n"
    client.talk(b64(b"\0u\0p") + b"\r\n")
    assert client.login.credentials.user == b"u"


def test_auth_login_prompts(pop3) -> None:
    client = pop3()
    assert client.talk(b"AUTH LOGIN\r\n") == replies.POP3_USERNAME
    assert client.talk(b64(b"u") + b"\r\n") == replies.POP3_PASSWORD
    client.talk(b64(b"p") + b"\r\n")
    assert client.login.credentials.password == b"p"


def test_auth_cram_md5_challenge(pop3) -> None:
    client = pop3(pop3_auth=("cram-md5",))
    assert client.talk(b"AUTH CRAM-MD5\r\n") == b"+ " + b64(client.machine.salt) + b"\r\n"


@pytest.mark.parametrize("command", [b"USER u\r\n", b"AUTH PLAIN\r\n", b"AUTH\r\n"])
def test_starttls_only_refuses_auth_commands(pop3, command) -> None:
    assert pop3(starttls=ONLY).talk(command) == b"-ERR invalid command\r\n"


def test_stls_replies_ok_and_discards_pipelined_bytes(pop3) -> None:
    client = pop3(starttls=ON)
    assert client.talk(b"STLS\r\nUSER evil\r\nPASS x\r\n") == b"+OK\r\n"
    assert client.starttls == 1
    client.machine.tls_started()
    assert client.talk(b"NOOP\r\n") == b"+OK\r\n"
    assert not client.logins


def test_quit_replies_ok_and_closes(pop3) -> None:
    client = pop3()
    assert client.talk(b"QUIT\r\n") == b"+OK\r\n"
    assert client.closed


def test_login_failed_replies_err(pop3) -> None:
    client = pop3()
    client.talk(b"USER u\r\nPASS p\r\n")
    assert client.machine.login_failed(b"Invalid login", None) == b"-ERR Invalid login\r\n"


def test_command_buffer_is_128_bytes(pop3) -> None:
    client = pop3()
    assert client.machine.read_size() == 128
    assert client.talk(b"USER " + b"u" * 200) == b"-ERR invalid command\r\n"
    assert client.closed


def test_pipelined_commands_straddling_the_buffer_end_are_too_long_as_nginx(pop3) -> None:
    client = pop3()
    assert client.talk(b"NOOP\r\n" * 21 + b"NOOP\r\n") == b"+OK\r\n" * 21 + (
        b"-ERR invalid command\r\n"
    )
    assert client.closed


def test_max_errors_closes(pop3) -> None:
    client = pop3(max_errors=3)
    assert client.talk(b"XXXX\r\n" * 4) == b"-ERR invalid command\r\n" * 3
    assert client.closed


def test_salt_is_made_once_when_not_given_in_nginx_form() -> None:
    server = model.ServerConfig(
        source=model.Source("t", 1),
        listens=(),
        protocol=model.Protocol.POP3,
        server_name="mail.example",
    )
    machine = Pop3Machine(server)
    salt = machine.salt
    assert re.fullmatch(rb"<\d+\.\d+@mail\.example>", salt)
    assert machine.salt is salt


def test_internal_error_line(pop3) -> None:
    assert pop3().machine.internal_error() == b"-ERR internal server error\r\n"
