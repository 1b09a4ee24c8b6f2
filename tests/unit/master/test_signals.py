"""The signal table shared by ``-s`` and the master's log lines."""

from __future__ import annotations

import signal

from mailgate.master import signals


def test_s_actions_map_to_nginx_signals() -> None:
    assert signals.ACTIONS == {
        "reload": signal.SIGHUP,
        "reopen": signal.SIGUSR1,
        "stop": signal.SIGTERM,
        "quit": signal.SIGQUIT,
    }


def test_received_line_names_the_signal_and_the_action() -> None:
    assert signals.received(signal.SIGTERM) == "signal 15 (SIGTERM) received, exiting"
    assert signals.received(signal.SIGHUP) == "signal 1 (SIGHUP) received, reconfiguring"


def test_received_line_without_an_action_has_no_comma() -> None:
    assert signals.received(signal.SIGCHLD) == "signal 17 (SIGCHLD) received"


def test_master_handles_every_signal_the_table_lists() -> None:
    assert set(signals.HANDLED) >= {signal.SIGQUIT, signal.SIGWINCH, signal.SIGUSR2}
