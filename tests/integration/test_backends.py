"""The real backends work on their own, without mailgate in front.

If these fail, every proxy test against the same servers would fail for reasons that have
nothing to do with mailgate, so they are the first thing to read.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import uuid
from pathlib import Path

import pytest

from tests.servers.dovecot import DovecotInfo
from tests.servers.postfix import PostfixInfo, running_postfix

pytestmark = pytest.mark.slow  # Dovecot and Postfix


def _message(subject: str) -> bytes:
    return f"From: test@example.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


def _smtp(info: PostfixInfo) -> smtplib.SMTP:
    return smtplib.SMTP(info.host, info.smtp_port, local_hostname="client.test", timeout=10)


def test_imap_fetches_a_planted_message(dovecot: DovecotInfo) -> None:
    subject = f"planted-imap-{uuid.uuid4()}"
    dovecot.add_message("alice", _message(subject))
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10) as imap:
        imap.login("alice", "alice-pw")
        status, _count = imap.select("INBOX")
        assert status == "OK"
        status, found = imap.search(None, "SUBJECT", f'"{subject}"')
        assert found[0], f"{subject} not in INBOX"
        status, fetched = imap.fetch(found[0].decode(), "(RFC822)")
    assert status == "OK"
    assert isinstance(fetched[0], tuple)
    assert subject.encode() in fetched[0][1]


def test_pop3_retrieves_a_planted_message(dovecot: DovecotInfo) -> None:
    subject = f"planted-pop3-{uuid.uuid4()}"
    dovecot.add_message("bob", _message(subject))
    pop = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        pop.user("bob")
        pop.pass_("bob-pw")
        count, _size = pop.stat()
        _resp, lines, _octets = pop.retr(count)
    finally:
        pop.quit()
    assert f"Subject: {subject}".encode() in lines


def test_imap_rejects_a_wrong_password(dovecot: DovecotInfo) -> None:
    with (
        imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10) as imap,
        pytest.raises(imaplib.IMAP4.error),
    ):
        imap.login("alice", "wrong")


def test_smtp_ehlo_offers_xclient_to_loopback(postfix: PostfixInfo) -> None:
    with _smtp(postfix) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("xclient")
        assert "LOGIN" in smtp.esmtp_features["xclient"].split()


def test_smtp_accepts_xclient_addr_and_login(postfix: PostfixInfo) -> None:
    with _smtp(postfix) as smtp:
        smtp.ehlo()
        code, reply = smtp.docmd("XCLIENT", "ADDR=192.0.2.7 LOGIN=alice NAME=[UNAVAILABLE]")
        assert code == 220, reply  # Postfix greets again after XCLIENT
        code, _reply = smtp.ehlo()
        assert code == 250


def test_smtp_auth_plain_succeeds_through_dovecot(postfix: PostfixInfo) -> None:
    with _smtp(postfix) as smtp:
        smtp.ehlo()
        code, _reply = smtp.login("carol", "carol-pw")
    assert code == 235


def test_smtp_auth_plain_fails_with_a_wrong_password(postfix: PostfixInfo) -> None:
    token = base64.b64encode(b"\0carol\0wrong").decode()
    with _smtp(postfix) as smtp:
        smtp.ehlo()
        code, _reply = smtp.docmd("AUTH", f"PLAIN {token}")
    assert code == 535


def test_smtp_message_is_delivered_to_the_maildir(postfix: PostfixInfo) -> None:
    subject = f"sent-{uuid.uuid4()}"
    before = len(postfix.wait_for_messages("carol", count=0))  # the session's Postfix is shared
    with _smtp(postfix) as smtp:
        smtp.sendmail("sender@client.test", [postfix.address("carol")], _message(subject))
    messages = postfix.wait_for_messages("carol", count=before + 1)
    assert any(subject.encode() in m for m in messages)


def test_smtp_message_is_readable_over_imap(postfix: PostfixInfo, dovecot: DovecotInfo) -> None:
    subject = f"sent-imap-{uuid.uuid4()}"
    before = len(postfix.wait_for_messages("alice", count=0))
    with _smtp(postfix) as smtp:
        smtp.sendmail("sender@client.test", [postfix.address("alice")], _message(subject))
    postfix.wait_for_messages("alice", count=before + 1)
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10) as imap:
        imap.login("alice", "alice-pw")
        imap.select("INBOX", readonly=True)
        status, found = imap.search(None, "SUBJECT", f'"{subject}"')
    assert status == "OK"
    assert found[0].split(), f"{subject} not found over IMAP"


def test_postfix_without_dovecot_delivers_to_a_catchall(tmp_path: Path) -> None:
    with running_postfix(tmp_path) as info:
        assert not info.sasl
        with _smtp(info) as smtp:
            smtp.sendmail("a@client.test", [info.address("anyone")], _message("catchall"))
        assert b"Subject: catchall" in info.wait_for_messages("anyone")[0]
