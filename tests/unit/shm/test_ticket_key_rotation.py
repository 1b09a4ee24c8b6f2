"""nginx 1.23.2's rotation of the shared ticket keys, on plain memory."""

from __future__ import annotations

from mailgate.shm import layout, ticket_keys

T = 1_000_000


def names(keys: list[ticket_keys.SharedKey]) -> list[bytes]:
    return [key.name for key in keys]


def test_first_sync_makes_current_equal_previous_and_a_next() -> None:
    buf = bytearray(layout.HEADER_SIZE)
    keys, torn = ticket_keys.rotate(buf, T, 300)
    assert not torn
    assert keys[0].name == keys[1].name != keys[2].name
    assert keys[0].expire == T + 300


def test_keys_rotate_once_the_previous_key_expires() -> None:
    buf = bytearray(layout.HEADER_SIZE)
    first, _ = ticket_keys.rotate(buf, T, 300)
    assert names(ticket_keys.rotate(buf, T + 300, 300)[0]) == names(first)
    second, _ = ticket_keys.rotate(buf, T + 301, 300)
    assert second[0].name == first[2].name and second[1].name == first[0].name
    third, _ = ticket_keys.rotate(buf, T + 301 + 301, 300)
    assert third[0].name == second[2].name and third[1].name == second[0].name
    assert first[0].name not in names(third)


def test_every_sync_pushes_the_current_expiry() -> None:
    buf = bytearray(layout.HEADER_SIZE)
    ticket_keys.rotate(buf, T, 300)
    keys, _ = ticket_keys.rotate(buf, T + 100, 300)
    assert keys[0].expire == T + 400


def test_torn_keys_are_regenerated_and_reported() -> None:
    buf = bytearray(layout.HEADER_SIZE)
    first, _ = ticket_keys.rotate(buf, T, 300)
    buf[layout.KEYS_AT + 3] ^= 0xFF
    keys, torn = ticket_keys.rotate(buf, T, 300)
    assert torn and first[0].name not in names(keys)
