"""Fixtures shared by the integration modules (the session-wide ones are in tests/conftest.py)."""

from collections.abc import Iterator

import pytest

from tests.integration.lifecycle_support import gate
from tests.servers.syslog import SyslogReceiver, running_receiver

__all__ = ["gate", "syslog"]


@pytest.fixture(scope="module")
def syslog() -> Iterator[SyslogReceiver]:
    """A UDP syslog receiver for the module's gateway (``error_log syslog:server=...``)."""
    with running_receiver() as receiver:
        yield receiver
