"""Backend login transcripts against a scripted peer: exact bytes sent, exact client reply."""

from __future__ import annotations

import base64

import pytest

from mailgate.config.model import Protocol, ServerConfig, Source
from mailgate.worker.backend.login import (
    SMTP_AUTH_OK,
    BackendLogin,
    BackendOptions,
    BackendSend,
    Done,
    Event,
    Failed,
    ImapBackendLogin,
    LogLine,
    Pop3BackendLogin,
    SmtpBackendLogin,
    SmtpClient,
    auth_mechanisms,
    smtp_reply_complete,
    upstream_timed_out,
    xclient_command,
)
from mailgate.worker.sansio import NEED_DATA

IMAP_ERROR = b"* BAD internal server error\r\n"
POP3_ERROR = b"-ERR internal server error\r\n"
SMTP_ERROR = b"451 4.3.2 Internal server error\r\n"


def drain(login: BackendLogin) -> list[Event]:
    events: list[Event] = []
    while (event := login.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, Done | Failed):
            break
    return events


def transcript(login: BackendLogin, *backend: bytes) -> list[Event]:
    """Everything the machine does while the backend says ``backend``, chunk by chunk."""
    events = drain(login)
    for chunk in backend:
        login.receive_data(chunk)
        events += drain(login)
    return events


DEFAULTS = BackendOptions()
PASS_ERRORS = BackendOptions(pass_error_message=True)


def imap(options: BackendOptions = DEFAULTS) -> ImapBackendLogin:
    return ImapBackendLogin(b"a1", b"joe", b"secret", options)


# --- IMAP ----------------------------------------------------------------------------------


def test_imap_login_uses_literals_and_forwards_the_tagged_ok() -> None:
    events = transcript(
        imap(),
        b"* OK IMAP4rev1 ready\r\n",
        b"+ go ahead\r\n",
        b"+ go ahead\r\n",
        b"a1 OK LOGIN completed\r\n",
    )
    assert events == [
        BackendSend(b"a1 LOGIN {3}\r\n"),
        BackendSend(b"joe {6}\r\n"),
        BackendSend(b"secret\r\n", secret=True),
        Done(b"a1 OK LOGIN completed\r\n"),
    ]


def test_imap_untagged_capability_before_the_tagged_ok_is_forwarded_too() -> None:
    final = b"* CAPABILITY IMAP4rev1 IDLE\r\na1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"
    events = transcript(imap(), b"* OK hi\r\n", b"+ \r\n", b"+ \r\n", final)
    assert events[-1] == Done(final)


def test_imap_untagged_line_alone_waits_for_the_tagged_line() -> None:
    login = imap()
    transcript(login, b"* OK hi\r\n", b"+ \r\n", b"+ \r\n")
    assert transcript(login, b"* CAPABILITY IMAP4rev1\r\n") == []
    assert transcript(login, b"a1 OK done\r\n") == [
        Done(b"* CAPABILITY IMAP4rev1\r\na1 OK done\r\n")
    ]


def test_imap_reply_split_across_reads_is_reassembled() -> None:
    events = transcript(imap(), b"* O", b"K ready", b"\r\n")
    assert events == [BackendSend(b"a1 LOGIN {3}\r\n")]


def test_imap_rejected_login_with_pass_error_message_off() -> None:
    events = transcript(imap(), b"* OK\r\n", b"+\r\n\r\n", b"+ \r\n", b"a1 NO bad password\r\n")
    assert events[-1] == Failed(
        IMAP_ERROR, LogLine("error", 'upstream sent invalid response: "NO bad password"')
    )


def test_imap_rejected_login_with_pass_error_message_on() -> None:
    login = imap(PASS_ERRORS)
    events = transcript(login, b"* OK\r\n", b"+ \r\n", b"+ \r\n", b"a1 NO bad password\r\n")
    assert events[-1] == Failed(
        b"a1 NO bad password\r\n",
        LogLine("info", 'upstream sent invalid response: "NO bad password"'),
    )


def test_imap_greeting_must_be_untagged_ok() -> None:
    events = transcript(imap(PASS_ERRORS), b"* BYE go away\r\n")
    assert events == [
        Failed(
            b"* BYE go away\r\n", LogLine("info", 'upstream sent invalid response: "* BYE go away"')
        )
    ]


def test_imap_literal_without_continuation_fails() -> None:
    events = transcript(imap(), b"* OK\r\n", b"a1 BAD no literals\r\n")
    assert events[-1] == Failed(
        IMAP_ERROR, LogLine("error", 'upstream sent invalid response: "a1 BAD no literals"')
    )


# --- POP3 ----------------------------------------------------------------------------------


def test_pop3_login_is_user_then_pass_and_forwards_the_last_ok() -> None:
    login = Pop3BackendLogin(b"joe", b"secret")
    events = transcript(login, b"+OK POP3 ready\r\n", b"+OK\r\n", b"+OK maildrop locked\r\n")
    assert events == [
        BackendSend(b"USER joe\r\n"),
        BackendSend(b"PASS secret\r\n", secret=True),
        Done(b"+OK maildrop locked\r\n"),
    ]


def test_pop3_wrong_password_with_pass_error_message_on() -> None:
    login = Pop3BackendLogin(b"joe", b"bad", PASS_ERRORS)
    events = transcript(login, b"+OK\r\n", b"+OK\r\n", b"-ERR [AUTH] invalid\r\n")
    assert events[-1] == Failed(
        b"-ERR [AUTH] invalid\r\n",
        LogLine("info", 'upstream sent invalid response: "-ERR [AUTH] invalid"'),
    )


def test_pop3_wrong_password_with_pass_error_message_off() -> None:
    events = transcript(Pop3BackendLogin(b"joe", b"bad"), b"+OK\r\n", b"+OK\r\n", b"-ERR no\r\n")
    assert events[-1] == Failed(
        POP3_ERROR, LogLine("error", 'upstream sent invalid response: "-ERR no"')
    )


# --- reply reading rules shared by all protocols --------------------------------------------


def test_replies_shorter_than_four_bytes_are_not_judged() -> None:
    login = Pop3BackendLogin(b"joe", b"pw")
    assert transcript(login, b"+\r\n") == []


def test_reply_must_end_in_crlf() -> None:
    login = Pop3BackendLogin(b"joe", b"pw")
    assert transcript(login, b"+OK ready\n") == []
    assert transcript(login, b"\r\n") == [BackendSend(b"USER joe\r\n")]


def test_too_long_response_line_is_an_internal_error_even_when_passing_errors() -> None:
    login = Pop3BackendLogin(b"joe", b"pw", BackendOptions(True, buffer_size=16))
    events = transcript(login, b"+OK " + b"x" * 40)
    assert events == [
        Failed(
            POP3_ERROR,
            LogLine("error", 'upstream sent too long response line: "+OK xxxxxxxxxxx"'),
        )
    ]


def test_a_reply_filling_the_buffer_exactly_is_read() -> None:
    login = Pop3BackendLogin(b"joe", b"pw", BackendOptions(buffer_size=16))
    assert transcript(login, b"+OK 0123456789\r\n") == [BackendSend(b"USER joe\r\n")]


def test_bytes_beyond_the_buffer_wait_for_the_next_reply() -> None:
    login = Pop3BackendLogin(b"joe", b"pw", BackendOptions(buffer_size=16))
    events = transcript(login, b"+OK 0123456789\r\n+OK user\r\n", b"+OK pass\r\n")
    assert events == [
        BackendSend(b"USER joe\r\n"),
        BackendSend(b"PASS pw\r\n", secret=True),
        Done(b"+OK pass\r\n"),
    ]


def test_eof_before_a_reply_is_an_internal_error_without_log() -> None:
    login = imap()
    assert transcript(login, b"* OK", b"") == [Failed(IMAP_ERROR, None)]


def test_logged_text_stops_at_nul_when_errors_are_not_passed() -> None:
    events = transcript(Pop3BackendLogin(b"j", b"p"), b"-ERR a\x00b\r\n")
    assert events == [
        Failed(POP3_ERROR, LogLine("error", 'upstream sent invalid response: "-ERR a"'))
    ]


def test_proxy_protocol_header_is_sent_before_the_greeting_is_read() -> None:
    login = Pop3BackendLogin(
        b"joe", b"pw", BackendOptions(preamble=b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
    )
    assert transcript(login, b"+OK\r\n") == [
        BackendSend(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        BackendSend(b"USER joe\r\n"),
    ]


def test_finished_login_repeats_its_outcome() -> None:
    login = Pop3BackendLogin(b"joe", b"pw")
    transcript(login, b"-ERR\r\n")
    assert (
        login.next_event()
        == login.next_event()
        == Failed(POP3_ERROR, LogLine("error", 'upstream sent invalid response: "-ERR"'))
    )


def test_secret_sends_hide_their_bytes_in_repr() -> None:
    assert "hunter2" not in repr(BackendSend(b"PASS hunter2\r\n", secret=True))
    assert "USER" in repr(BackendSend(b"USER joe\r\n"))


@pytest.mark.parametrize(
    ("protocol", "line"),
    [(Protocol.IMAP, IMAP_ERROR), (Protocol.POP3, POP3_ERROR), (Protocol.SMTP, SMTP_ERROR)],
)
def test_upstream_timeout(protocol: Protocol, line: bytes) -> None:
    assert upstream_timed_out(protocol) == Failed(line, LogLine("info", "upstream timed out"))


# --- SMTP ----------------------------------------------------------------------------------

CLIENT = SmtpClient(addr="192.0.2.7", host="client.example", helo=b"laptop", esmtp=True)
EHLO_REPLY = b"250-backend\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"


def smtp(client: SmtpClient = CLIENT, **kw: object) -> SmtpBackendLogin:
    options: dict[str, object] = {"user": b"joe", "password": b"secret"} | kw
    return SmtpBackendLogin(server_name="mx.example", client=client, **options)  # type: ignore[arg-type]


def test_smtp_xclient_login_replays_the_client_ehlo_and_answers_235() -> None:
    events = transcript(
        smtp(),
        b"220 backend ESMTP\r\n",
        EHLO_REPLY,
        b"220 backend ESMTP\r\n",
        b"250-backend\r\n250 8BITMIME\r\n",
    )
    assert events == [
        BackendSend(b"EHLO mx.example\r\n"),
        BackendSend(b"XCLIENT ADDR=192.0.2.7 LOGIN=joe NAME=client.example\r\n"),
        BackendSend(b"EHLO laptop\r\n"),
        Done(SMTP_AUTH_OK),
    ]


def test_smtp_xclient_for_an_ipv6_client_and_a_helo_client() -> None:
    client = SmtpClient(addr="2001:db8::7", host="[UNAVAILABLE]", helo=b"old", esmtp=False)
    events = transcript(smtp(client), b"220 hi\r\n", b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n")
    assert events == [
        BackendSend(b"EHLO mx.example\r\n"),
        BackendSend(b"XCLIENT ADDR=IPV6:2001:db8::7 LOGIN=joe NAME=[UNAVAILABLE]\r\n"),
        BackendSend(b"HELO old\r\n"),
        Done(SMTP_AUTH_OK),
    ]


def test_smtp_xclient_without_client_helo_ends_at_the_xclient_reply() -> None:
    client = SmtpClient(addr="192.0.2.7", host="[TEMPUNAVAIL]")
    events = transcript(smtp(client), b"220 hi\r\n", b"250 ok\r\n", b"220 again\r\n")
    assert events == [
        BackendSend(b"EHLO mx.example\r\n"),
        BackendSend(b"XCLIENT ADDR=192.0.2.7 LOGIN=joe NAME=[TEMPUNAVAIL]\r\n"),
        Done(SMTP_AUTH_OK),
    ]


def test_smtp_xclient_login_is_xtext_encoded() -> None:
    line = xclient_command(CLIENT, b"joe+x=y z@example")
    assert line == b"XCLIENT ADDR=192.0.2.7 LOGIN=joe+2Bx+3Dy+20z@example NAME=client.example\r\n"


def test_smtp_xclient_off_says_helo_or_ehlo_as_the_client_did_with_our_name() -> None:
    helo_client = SmtpClient(addr="192.0.2.7", host="h", helo=b"laptop", esmtp=False)
    assert transcript(smtp(helo_client, xclient=False), b"220 hi\r\n", b"250 hi\r\n") == [
        BackendSend(b"HELO mx.example\r\n"),
        Done(SMTP_AUTH_OK),
    ]
    assert transcript(smtp(xclient=False), b"220 hi\r\n")[0] == BackendSend(b"EHLO mx.example\r\n")


def test_smtp_proxy_smtp_auth_sends_auth_plain_and_omits_xclient_login() -> None:
    plain = base64.b64encode(b"\0joe\0secret")
    events = transcript(
        smtp(proxy_smtp_auth=True),
        b"220 hi\r\n",
        EHLO_REPLY,
        b"220 hi\r\n",
        EHLO_REPLY,
        b"235 2.7.0 Authentication successful\r\n",
    )
    assert events == [
        BackendSend(b"EHLO mx.example\r\n"),
        BackendSend(b"XCLIENT ADDR=192.0.2.7 NAME=client.example\r\n"),
        BackendSend(b"EHLO laptop\r\n"),
        BackendSend(b"AUTH PLAIN " + plain + b"\r\n", secret=True),
        Done(SMTP_AUTH_OK),
    ]


def test_smtp_auth_login_when_the_backend_offers_only_login() -> None:
    only_login = b"250-backend\r\n250 AUTH LOGIN\r\n"
    events = transcript(
        smtp(xclient=False, proxy_smtp_auth=True),
        b"220 hi\r\n",
        only_login,
        b"334 VXNlcm5hbWU6\r\n",
        b"334 UGFzc3dvcmQ6\r\n",
        b"235 ok\r\n",
    )
    assert events == [
        BackendSend(b"EHLO mx.example\r\n"),
        BackendSend(b"AUTH LOGIN\r\n"),
        BackendSend(b"am9l\r\n"),
        BackendSend(b"c2VjcmV0\r\n", secret=True),
        Done(SMTP_AUTH_OK),
    ]


@pytest.mark.parametrize("password", [None, b""], ids=["none", "empty"])
def test_smtp_auth_without_password_is_an_internal_error(password: bytes | None) -> None:
    events = transcript(
        smtp(xclient=False, proxy_smtp_auth=True, password=password), b"220 hi\r\n", EHLO_REPLY
    )
    assert events[-1] == Failed(SMTP_ERROR, LogLine("error", "no password available"))
    assert not [
        event for event in events if isinstance(event, BackendSend) and b"AUTH" in event.data
    ]


def test_smtp_rejected_auth_passes_the_backend_reply_when_asked() -> None:
    events = transcript(
        smtp(xclient=False, proxy_smtp_auth=True, options=PASS_ERRORS),
        b"220 hi\r\n",
        EHLO_REPLY,
        b"535 5.7.8 Error: authentication failed\r\n",
    )
    assert events[-1] == Failed(
        b"535 5.7.8 Error: authentication failed\r\n",
        LogLine("info", 'upstream sent invalid response: "535 5.7.8 Error: authentication failed"'),
    )


def test_smtp_none_replays_mail_and_rcpt_and_forwards_the_rcpt_reply() -> None:
    client = SmtpClient(
        addr="192.0.2.7",
        host="client.example",
        helo=b"laptop",
        esmtp=True,
        mail_from=b"MAIL FROM:<a@example.org> SIZE=10",
        rcpt_to=b"RCPT TO:<b@example.net>",
    )
    events = transcript(
        smtp(client, user=b"", password=b""),
        b"220 hi\r\n",
        EHLO_REPLY,
        b"250 ok\r\n",
        b"250 hello\r\n",
        b"250 2.1.0 ok\r\n",
        b"550 5.1.1 no such user\r\n",
    )
    assert events == [
        BackendSend(b"EHLO mx.example\r\n"),
        BackendSend(b"XCLIENT ADDR=192.0.2.7 NAME=client.example\r\n"),
        BackendSend(b"EHLO laptop\r\n"),
        BackendSend(b"MAIL FROM:<a@example.org> SIZE=10\r\n"),
        BackendSend(b"RCPT TO:<b@example.net>\r\n"),
        Done(b"550 5.1.1 no such user\r\n"),
    ]


def test_smtp_multiline_reply_waits_for_its_last_line() -> None:
    login = smtp(xclient=False)
    transcript(login, b"220 hi\r\n")
    assert transcript(login, b"250-backend\r\n250-SIZE 100\r\n") == []
    assert transcript(login, b"250 8BITMIME\r\n") == [Done(SMTP_AUTH_OK)]


def test_smtp_greeting_must_be_220() -> None:
    events = transcript(smtp(), b"554 no service\r\n")
    assert events == [
        Failed(SMTP_ERROR, LogLine("error", 'upstream sent invalid response: "554 no service"'))
    ]


def test_smtp_xclient_refused_is_a_failure() -> None:
    events = transcript(smtp(), b"220 hi\r\n", EHLO_REPLY, b"550 5.7.0 not authorized\r\n")
    assert events[-1] == Failed(
        SMTP_ERROR, LogLine("error", 'upstream sent invalid response: "550 5.7.0 not authorized"')
    )


@pytest.mark.parametrize(
    ("reply", "complete"),
    [
        (b"250 ok\r\n", True),
        (b"250-a\r\n", False),
        (b"250-a\r\n250-b\r\n", False),
        (b"250-a\r\n250 b\r\n", True),
        (b"250-a\r\n250\r\n", True),
    ],
)
def test_smtp_reply_completeness(reply: bytes, complete: bool) -> None:
    assert smtp_reply_complete(reply) is complete


@pytest.mark.parametrize(
    ("reply", "mechanisms"),
    [
        (EHLO_REPLY, {b"PLAIN", b"LOGIN"}),
        (b"250-x\r\n250-AUTH=LOGIN\r\n250 auth login cram-md5\r\n", {b"LOGIN", b"CRAM-MD5"}),
        (b"250 x\r\n", set()),
    ],
)
def test_auth_mechanisms_from_an_ehlo_reply(reply: bytes, mechanisms: set[bytes]) -> None:
    assert auth_mechanisms(reply) == mechanisms


def test_backend_options_come_from_the_proxy_directives() -> None:
    config = ServerConfig(
        source=Source("mail.conf", 1),
        listens=(),
        protocol=Protocol.IMAP,
        proxy_pass_error_message=True,
        proxy_buffer=8192,
    )
    assert BackendOptions.from_config(config, b"PROXY UNKNOWN\r\n") == BackendOptions(
        True, 8192, b"PROXY UNKNOWN\r\n"
    )


def test_bytes_read_ahead_of_the_reply_fill_the_machine_at_one_buffer() -> None:
    login = imap(BackendOptions(buffer_size=64))
    drain(login)
    assert not login.full
    login.receive_data(b"* OK")  # an unfinished greeting: judged once it ends in CRLF
    drain(login)
    login.receive_data(b"x" * 63)  # read, not judged yet: less than a buffer waits
    assert not login.full
    login.receive_data(b"y" * 64)  # a buffer's worth waits: the session stops reading
    assert login.full
