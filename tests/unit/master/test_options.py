"""Command-line parsing as nginx's ngx_get_options does it."""

from __future__ import annotations

import re

import pytest

from mailgate.master.options import OptionError, Options, parse


def test_value_may_be_glued_or_separate() -> None:
    assert parse(["-cfile.conf"]).conf_file == "file.conf"
    assert parse(["-c", "file.conf"]).conf_file == "file.conf"


def test_flags_may_be_grouped() -> None:
    opts = parse(["-tq"])
    assert (opts.test, opts.quiet) == (True, True)


def test_value_ends_a_group() -> None:
    opts = parse(["-tc", "x.conf"])
    assert (opts.test, opts.conf_file) == (True, "x.conf")


def test_capital_t_means_test_and_dump() -> None:
    opts = parse(["-T"])
    assert (opts.test, opts.dump) == (True, True)


def test_help_also_shows_the_version() -> None:
    assert parse(["-?"]) == Options(help=True, version=True)


def test_all_values_are_kept() -> None:
    opts = parse(["-p", "/srv", "-e", "stderr", "-g", "daemon off;", "-s", "reopen"])
    assert (opts.prefix, opts.error_log, opts.directives, opts.signal) == (
        "/srv",
        "stderr",
        "daemon off;",
        "reopen",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-z"], 'invalid option: "z"'),
        (["file"], 'invalid option: "file"'),
        (["-s", "restart"], 'invalid option: "-s restart"'),
        (["-e"], 'option "-e" requires file name'),
        (["-g"], 'option "-g" requires parameter'),
        (["-s"], 'option "-s" requires parameter'),
    ],
)
def test_errors_are_worded_as_nginx(argv: list[str], message: str) -> None:
    with pytest.raises(OptionError, match=f"^{re.escape(message)}$"):
        parse(argv)
