"""Helpers for the configuration tests: files in tmp_path and a resolver off the network."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailgate.config import addresses, loader, model

# The names the tests may resolve, and what they resolve to.
FAKE_HOSTS = {
    "localhost": [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
    "auth.test": [(socket.AF_INET6, "2001:db8::5"), (socket.AF_INET, "192.0.2.5")],
    "backend.test": [(socket.AF_INET, "192.0.2.7")],
}


def fake_resolve(host: str) -> list[tuple[socket.AddressFamily, str]]:
    return FAKE_HOSTS.get(host, [])


@pytest.fixture(autouse=True)
def offline_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(addresses, "resolve_host", fake_resolve)
    yield


Load = Callable[..., model.Config]


@pytest.fixture
def conf_path(tmp_path: Path) -> Path:
    return tmp_path / "mailgate.conf"


@pytest.fixture
def load(conf_path: Path) -> Load:
    """Write ``text`` as the main configuration file and load it."""

    def load_text(text: str, **kwargs: str) -> model.Config:
        conf_path.write_text(text)
        return loader.load(str(conf_path), **kwargs)

    return load_text


def mail(server: str = "", mail_level: str = "") -> str:
    """A minimal valid configuration with one IMAP server, plus extra directives."""
    return (
        "mail {\n"
        "    auth_http 127.0.0.1:9000;\n"
        f"    {mail_level}\n"
        "    server {\n"
        "        listen 127.0.0.1:1143;\n"
        "        protocol imap;\n"
        f"        {server}\n"
        "    }\n"
        "}\n"
    )
