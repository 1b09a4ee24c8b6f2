"""The tokenizer splits text into the same words and statements as nginx."""

from __future__ import annotations

import pytest

from mailgate.config.errors import ConfigError
from mailgate.config.lexer import COMMAND_LINE, End, Lexer, Statement


def statements(text: str) -> list[Statement]:
    lexer = Lexer(text.encode(), "f.conf")
    found = []
    while True:
        statement = lexer.next_statement()
        found.append(statement)
        if statement.end is End.EOF:
            return found


def words(text: str) -> tuple[str, ...]:
    return statements(text)[0].words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b  c;", ("a", "b", "c")),
        ("a\tb\r\nc;", ("a", "b", "c")),
        ('a "b c";', ("a", "b c")),
        ("a 'b c';", ("a", "b c")),
        (r'a "b\"c";', ("a", 'b"c')),
        (r"a 'b\'c';", ("a", "b'c")),
        (r'a "b\\c";', ("a", "b\\c")),
        (r'a "\t\r\n";', ("a", "\t\r\n")),
        (r"a b\x;", ("a", "b\\x")),  # other escapes stay verbatim
        (r"a b\ c;", ("a", "b\\ c")),  # an escaped space does not end a word
        ("a b#c;", ("a", "b#c")),  # "#" inside a word is not a comment
        ("a b} c;", ("a", "b}", "c")),  # "}" ends nothing inside a word
        ("a x${y}z;", ("a", "x${y}z")),  # "${" does not end a word
        ('a "";', ("a", "")),
        ("a 'x;{}';", ("a", "x;{}")),
    ],
)
def test_words_split_as_nginx_splits_them(text: str, expected: tuple[str, ...]) -> None:
    assert words(text) == expected


def test_comment_runs_to_end_of_line() -> None:
    assert words("# a; b;\nc d;") == ("c", "d")


def test_statement_ends_are_reported() -> None:
    ends = [s.end for s in statements("a { b; }")]
    assert ends == [End.BLOCK_START, End.SEMICOLON, End.BLOCK_END, End.EOF]


def test_statement_line_is_where_it_ends() -> None:
    assert statements("a\nb\n;")[0].line == 3


def test_quoted_word_may_be_followed_by_parenthesis() -> None:
    assert words('if ($a = "b") {') == ("if", "($a", "=", "b", ")")


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a b }", 'unexpected "}"', 1),
        ("a b", 'unexpected end of file, expecting ";" or "}"', 1),
        ('a "b;\n\n', 'unexpected end of file, expecting ";" or "}"', 3),
        (";", 'unexpected ";"', 1),
        ("\n{", 'unexpected "{"', 2),
        ('a "b"c;', 'unexpected "c"', 1),
    ],
)
def test_syntax_errors_name_nginx_phrase_and_line(text: str, message: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        statements(text)
    assert str(caught.value) == f"{message} in f.conf:{line}"


def test_word_reaching_nginx_buffer_size_is_too_long() -> None:
    text = "a " + "x" * 5000 + ";"
    with pytest.raises(ConfigError, match=r'too long parameter "xxxxxxxxxx\.\.\." started'):
        statements(text)


def test_unterminated_quote_reaching_buffer_size_names_the_quote() -> None:
    text = 'a "' + "x" * 5000 + '";'
    with pytest.raises(ConfigError, match='probably missing terminating """ character'):
        statements(text)


def test_command_line_end_without_semicolon_has_its_own_message() -> None:
    lexer = Lexer(b"daemon off", COMMAND_LINE)
    with pytest.raises(ConfigError) as caught:
        lexer.next_statement()
    assert str(caught.value) == 'unexpected end of parameter, expecting ";" in command line'
