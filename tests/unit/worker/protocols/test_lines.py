"""Command buffers and tokenizers, byte-compatible with ngx_mail_parse.c."""

from __future__ import annotations

import pytest

from mailgate.worker.protocols.lines import (
    Command,
    CommandBuffer,
    ImapParser,
    LineParser,
    Parse,
)

IMAP_VERBS = ("LOGIN", "AUTHENTICATE", "CAPABILITY", "LOGOUT", "NOOP", "STARTTLS")


def imap_parse(data: bytes) -> tuple[ImapParser, list[Command | Parse]]:
    parser = ImapParser(IMAP_VERBS)
    buf = CommandBuffer(4096)
    buf.feed(data)
    results: list[Command | Parse] = []
    while True:
        result = parser.parse(buf)
        results.append(result)
        if result is Parse.AGAIN:
            return parser, results


def login_args(data: bytes) -> list[bytes]:
    result = imap_parse(data)[1][0]
    assert isinstance(result, Command)
    return result.args


def test_buffer_refuses_bytes_beyond_its_capacity() -> None:
    buf = CommandBuffer(8)
    buf.feed(b"12345678")
    assert buf.full
    with pytest.raises(OverflowError):
        buf.feed(b"9")


def test_buffer_rewinds_only_when_drained() -> None:
    buf = CommandBuffer(8)
    buf.feed(b"abcd")
    buf.pos = 2
    buf.rewind_if_drained()
    assert (buf.pos, buf.space) == (2, 4)
    buf.pos = 4
    buf.rewind_if_drained()
    assert (buf.pos, buf.space) == (0, 8)


def test_line_parser_splits_verb_and_arguments() -> None:
    parser = LineParser({"MAIL"}, 11)
    buf = CommandBuffer(64)
    buf.feed(b"mail FROM:<a@b>  SIZE=10  \r\n")
    assert parser.parse(buf) == Command(
        "MAIL", [b"FROM:<a@b>", b"SIZE=10"], b"mail FROM:<a@b>  SIZE=10"
    )


def test_line_parser_keeps_spaces_inside_user_and_pass() -> None:
    parser = LineParser({"USER"}, 3, spaced={"USER"})
    buf = CommandBuffer(64)
    buf.feed(b"USER  a b \r\n")
    result = parser.parse(buf)
    assert isinstance(result, Command)
    assert result.args == [b"a b "]


@pytest.mark.parametrize(
    "line", [b"\r\n", b"NO0P\r\n", b"NOOP\rX\r\n", b"QUIT a b c d\r\n", b"XYZW\n"]
)
def test_line_parser_invalid_lines_are_consumed_to_lf(line: bytes) -> None:
    parser = LineParser({"NOOP", "QUIT"}, 3)
    buf = CommandBuffer(64)
    buf.feed(line + b"NOOP\r\n")
    assert parser.parse(buf) is Parse.INVALID
    assert parser.parse(buf) == Command("NOOP", [], b"NOOP")


def test_line_parser_reads_sasl_responses_after_auth() -> None:
    parser = LineParser({"AUTH"}, 3)
    buf = CommandBuffer(64)
    buf.feed(b"AUTH LOGIN\r\ndXNlcg==\r\n")
    assert parser.parse(buf) == Command("AUTH", [b"LOGIN"], b"AUTH LOGIN")
    assert parser.parse(buf) == Command("AUTH", [b"dXNlcg=="], b"dXNlcg==")


def test_imap_quoted_string_unescapes_backslashes_and_keeps_spaces() -> None:
    assert login_args(b'a LOGIN "us \\"er\\\\" pass\r\n') == [b'us "er\\', b"pass"]


def test_imap_synchronizing_literal_asks_for_continuation() -> None:
    _, results = imap_parse(b"a LOGIN {4}\r\nuser {2+}\r\npw\r\n")
    assert results[0] is Parse.NEXT
    assert results[1] == Command("LOGIN", [b"user", b"pw"], tag=b"a ")


def test_imap_literal_may_hold_crlf_and_nul() -> None:
    _, results = imap_parse(b"a LOGIN {4+}\r\nu\r\n\0 p\r\n")
    assert results[0] == Command("LOGIN", [b"u\r\n\0", b"p"], tag=b"a ")


def test_imap_zero_length_literal_swallows_one_byte_as_nginx() -> None:
    assert login_args(b"a LOGIN {0+}\r\nX p\r\n") == [b"X", b"p"]


def test_imap_tag_longer_than_32_characters_is_invalid() -> None:
    assert login_args(b"a" * 32 + b" NOOP\r\n") == []
    parser, results = imap_parse(b"a" * 33 + b" NOOP\r\n")
    assert results[0] is Parse.INVALID
    assert parser.tag == b""


def test_imap_tag_with_forbidden_character_is_invalid() -> None:
    assert imap_parse(b"a+b NOOP\r\n")[1][0] is Parse.INVALID


def test_imap_more_than_three_arguments_is_invalid() -> None:
    assert imap_parse(b"a LOGIN a b c d\r\n")[1][0] is Parse.INVALID


def test_imap_invalid_command_ending_in_non_sync_literal_sets_quit() -> None:
    parser, results = imap_parse(b"a SELECT {5+}\r\n")
    assert results[0] is Parse.INVALID
    assert parser.quit


def test_imap_invalid_command_ending_in_sync_literal_does_not_quit() -> None:
    parser, results = imap_parse(b"a SELECT {5}\r\n")
    assert results[0] is Parse.INVALID
    assert not parser.quit


def test_imap_quoted_string_cut_by_crlf_leaves_parser_quoted_as_nginx() -> None:
    _, results = imap_parse(b'a LOGIN "user\r\nb LOGIN x y\r\n')
    assert results[0] == Command("LOGIN", [b"user"], tag=b"a ")
    assert results[1] == Command("LOGIN", [b"x y"], tag=b"b ")


def test_imap_parse_resumes_byte_by_byte() -> None:
    parser = ImapParser(IMAP_VERBS)
    buf = CommandBuffer(64)
    results = []
    for byte in b'a1 LOGIN "u" {1+}\r\np\r\n':
        buf.feed(bytes([byte]))
        result = parser.parse(buf)
        if result is not Parse.AGAIN:
            results.append(result)
    assert results == [Command("LOGIN", [b"u", b"p"], tag=b"a1 ")]
