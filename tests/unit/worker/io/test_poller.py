"""The worker's epoll registry: callbacks per descriptor, as selectors would call them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from mailgate.worker.io.poller import EVENT_READ, EVENT_WRITE, EpollRegistry


@pytest.fixture
def registry() -> Iterator[EpollRegistry]:
    found = EpollRegistry()
    yield found
    found.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def test_a_readable_socket_gives_its_callback_and_the_read_mask(
    registry: EpollRegistry, pair: tuple[socket.socket, socket.socket]
) -> None:
    left, right = pair
    seen: list[int] = []
    registry.register(left, EVENT_READ, seen.append)
    right.send(b"x")
    assert registry.select(1.0) == [(seen.append, EVENT_READ)]


def test_modify_changes_what_is_watched_and_the_callback(
    registry: EpollRegistry, pair: tuple[socket.socket, socket.socket]
) -> None:
    left, _ = pair
    first: list[int] = []
    second: list[int] = []
    registry.register(left, EVENT_READ, first.append)
    assert registry.select(0) == []
    registry.modify(left, EVENT_WRITE, second.append)
    assert registry.select(1.0) == [(second.append, EVENT_WRITE)]


def test_registering_twice_or_modifying_an_unknown_socket_is_a_key_error(
    registry: EpollRegistry, pair: tuple[socket.socket, socket.socket]
) -> None:
    left, right = pair
    registry.register(left, EVENT_READ, print)
    with pytest.raises(KeyError):
        registry.register(left, EVENT_READ, print)
    with pytest.raises(KeyError):
        registry.modify(right, EVENT_READ, print)
    with pytest.raises(ValueError, match="Invalid events"):
        registry.register(right, 0, print)


def test_an_unregistered_socket_is_not_reported(
    registry: EpollRegistry, pair: tuple[socket.socket, socket.socket]
) -> None:
    left, right = pair
    registry.register(left, EVENT_READ, print)
    registry.unregister(left)
    right.send(b"x")
    assert registry.select(0.05) == []
    assert not registry.get_map()
    with pytest.raises(KeyError):
        registry.unregister(left)


def test_a_socket_closed_while_registered_can_still_be_unregistered(
    registry: EpollRegistry,
) -> None:
    left, right = socket.socketpair()
    registry.register(left, EVENT_READ, print)
    left.close()
    registry.unregister(left)  # found by identity: its fileno() is -1 now
    assert not registry.get_map()
    right.close()


def test_forget_drops_the_callback_of_a_socket_about_to_be_closed(
    registry: EpollRegistry,
) -> None:
    left, right = socket.socketpair()
    registry.register(left, EVENT_READ, print)
    registry.forget(left)
    left.close()
    right.close()
    assert registry.select(0.05) == []
    assert not registry.get_map()


def test_a_listener_reports_a_pending_connection(registry: EpollRegistry) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        seen: list[int] = []
        registry.register(listener, EVENT_READ, seen.append)
        with socket.create_connection(listener.getsockname()):
            assert registry.select(1.0) == [(seen.append, EVENT_READ)]


def test_a_timeout_below_a_millisecond_still_waits(registry: EpollRegistry) -> None:
    # epoll counts whole milliseconds: rounding 0.3 ms down to 0 would spin until a timer is due.
    started = time.monotonic()
    assert registry.select(0.0003) == []
    assert time.monotonic() - started >= 0.0003
