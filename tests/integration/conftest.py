"""Fixtures shared by the integration modules (the session-wide ones are in tests/conftest.py)."""

from tests.integration.lifecycle_support import gate

__all__ = ["gate"]
