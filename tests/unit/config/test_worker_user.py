"""Who the workers run as: ``user``, or nginx's default when the master is root."""

from __future__ import annotations

from collections.abc import Callable

from mailgate.config.core import worker_user


def only(*groups: str) -> Callable[[str], bool]:
    return lambda name: name in groups


def test_a_root_master_without_user_runs_workers_as_nobody_nogroup_on_debian() -> None:
    assert worker_user(None, 0, only("nogroup")) == ("nobody", "nogroup")


def test_the_default_group_is_nobody_where_that_group_exists_as_nginx_configure_picks() -> None:
    assert worker_user(None, 0, only("nobody", "nogroup")) == ("nobody", "nobody")


def test_a_configured_user_wins_over_the_default() -> None:
    assert worker_user(("mail", None), 0, only("nogroup")) == ("mail", None)


def test_a_master_that_is_not_root_keeps_its_user_whatever_the_configuration() -> None:
    assert worker_user(None, 1000, only("nogroup")) is None
    assert worker_user(("mail", "mail"), 1000, only("nogroup")) is None
