"""The ``env`` directive, as nginx applies it to worker processes."""

from __future__ import annotations

from mailgate.master.environment import worker_environment
from mailgate.master.metrics import directory as metrics_directory

INHERITED = {"TZ": "UTC", "PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def test_only_tz_is_kept_by_default() -> None:
    assert worker_environment((), INHERITED) == {"TZ": "UTC"}


def test_env_name_keeps_the_inherited_value() -> None:
    assert worker_environment((("PATH", None),), INHERITED) == {"TZ": "UTC", "PATH": "/bin"}


def test_env_name_value_sets_it() -> None:
    env = worker_environment((("MALLOC_ARENA_MAX", "2"),), INHERITED)
    assert env == {"TZ": "UTC", "MALLOC_ARENA_MAX": "2"}


def test_env_name_absent_from_the_parent_is_not_invented() -> None:
    assert worker_environment((("OPENSSL_CONF", None),), INHERITED) == {"TZ": "UTC"}


def test_the_metrics_directory_survives() -> None:
    env = worker_environment((), {**INHERITED, metrics_directory.ENV: "/tmp/m"})
    assert env == {"TZ": "UTC", metrics_directory.ENV: "/tmp/m"}
