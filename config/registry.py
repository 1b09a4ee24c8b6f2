"""Every directive table, by name (nginx walks its modules' tables in the same way)."""

from __future__ import annotations

from mailgate.config import (
    auth_http,
    core,
    mail_core,
    mail_imap,
    mail_pop3,
    mail_smtp,
    mail_ssl,
    observability,
    proxy,
    realip,
)
from mailgate.config.directives import Directive

MODULES = (
    core,
    mail_core,
    mail_ssl,
    mail_pop3,
    mail_imap,
    mail_smtp,
    auth_http,
    proxy,
    realip,
    observability,
)


def _by_name() -> dict[str, tuple[Directive, ...]]:
    table: dict[str, list[Directive]] = {}
    for module in MODULES:
        for row in module.DIRECTIVES:
            table.setdefault(row.name, []).append(row)
    return {name: tuple(rows) for name, rows in table.items()}


# A name may have several rows, one per context (error_log: main, and mail/server).
DIRECTIVES = _by_name()
