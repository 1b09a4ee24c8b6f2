"""A tiny client harness for the sans-IO mail machines (no sockets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailgate.config import model
from mailgate.worker.protocols import (
    MACHINES,
    NEED_DATA,
    PAUSED,
    Close,
    Login,
    MailMachine,
    Send,
    StartTLS,
)

SALT = b"<3141592653.1700000000@mail.example>"


def server_config(protocol: model.Protocol, **settings: Any) -> model.ServerConfig:
    settings.setdefault("server_name", "mail.example")
    return model.ServerConfig(
        source=model.Source("t", 1), listens=(), protocol=protocol, **settings
    )


class Client:
    """Feeds bytes the way the worker will (never more than ``read_size()``) and collects
    what the machine hands out."""

    def __init__(self, machine: MailMachine[Any]) -> None:
        self.machine = machine
        self.logins: list[Login] = []
        self.starttls = 0
        self.closed = False

    def greet(self) -> bytes:
        return self.machine.greeting()

    def talk(self, data: bytes) -> bytes:
        """Send ``data`` (as many reads as the buffer allows); return every reply byte."""
        out = bytearray()
        while data and not self.closed:
            room = self.machine.read_size()
            if room == 0:
                break
            self.machine.receive_data(data[:room])
            data = data[room:]
            out += self.drain()
        return bytes(out)

    def eof(self) -> bytes:
        self.machine.receive_data(b"")
        return self.drain()

    def drain(self) -> bytes:
        out = bytearray()
        while True:
            event = self.machine.next_event()
            if event is NEED_DATA or event is PAUSED:
                return bytes(out)
            if isinstance(event, Send):
                out += event.data
            elif isinstance(event, Login):
                self.logins.append(event)
            elif isinstance(event, StartTLS):
                self.starttls += 1
            elif isinstance(event, Close):
                self.closed = True
                return bytes(out)

    @property
    def login(self) -> Login:
        assert self.logins, "no Login event"
        return self.logins[-1]


ClientFactory = Callable[..., Client]


def _factory(protocol: model.Protocol) -> ClientFactory:
    def make(*, greet: bool = True, tls: bool = False, **settings: Any) -> Client:
        machine = MACHINES[protocol](server_config(protocol, **settings), SALT, tls=tls)
        client = Client(machine)
        if greet:
            client.greet()
        return client

    return make


@pytest.fixture
def imap() -> ClientFactory:
    return _factory(model.Protocol.IMAP)


@pytest.fixture
def pop3() -> ClientFactory:
    return _factory(model.Protocol.POP3)


@pytest.fixture
def smtp() -> ClientFactory:
    return _factory(model.Protocol.SMTP)
