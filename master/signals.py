"""The master's signal table: each signal with its ``-s`` action and its log wording.

One list serves the command line (``-s reload`` sends SIGHUP) and the master's log line
(``signal 1 (SIGHUP) received, reconfiguring``), as nginx's ``signals[]`` does.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SignalRow:
    """One signal the master handles."""

    signo: signal.Signals
    action: str  # the ``-s`` name, or "" when the signal has none
    doing: str  # what the master does, as its log line says it


TABLE: tuple[SignalRow, ...] = (
    SignalRow(signal.SIGHUP, "reload", "reconfiguring"),
    SignalRow(signal.SIGUSR1, "reopen", "reopening logs"),
    SignalRow(signal.SIGWINCH, "", "stop accepting connections"),
    SignalRow(signal.SIGTERM, "stop", "exiting"),
    SignalRow(signal.SIGQUIT, "quit", "shutting down"),
    SignalRow(signal.SIGUSR2, "", "changing binary"),
    SignalRow(signal.SIGINT, "", "exiting"),
    SignalRow(signal.SIGCHLD, "", ""),
)

ACTIONS: dict[str, signal.Signals] = {row.action: row.signo for row in TABLE if row.action}
HANDLED: tuple[signal.Signals, ...] = tuple(row.signo for row in TABLE)
_DOING: dict[signal.Signals, str] = {row.signo: row.doing for row in TABLE}


def received(signo: int, doing: str | None = None) -> str:
    """The notice nginx logs for a signal: ``signal 15 (SIGTERM) received, exiting``.

    nginx also names the sender's pid; Python's handlers get no siginfo, so mailgate cannot.
    ``doing`` overrides the table, e.g. "ignoring" for WINCH when not daemonized.
    """
    sig = signal.Signals(signo)
    what = _DOING.get(sig, "") if doing is None else doing
    suffix = f", {what}" if what else ""
    return f"signal {int(sig)} ({sig.name}) received{suffix}"
