"""Typed setters (nginx's ``ngx_conf_set_*_slot``) and the value parsers under them.

Each setter factory returns a ``Setter`` that reads the directive's arguments, types them
once (seconds as ``float``, bytes as ``int``) and stores them in the current level under the
row's field. Messages are nginx's, word for word.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence

from mailgate.config.directives import Call, Setter

# nginx keeps times in a 32-bit signed value and sizes/numbers in ssize_t/ngx_int_t.
MAX_INT32 = 2**31 - 1
MAX_INT_T = 2**63 - 1

_SIZE_UNITS = {"k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}

# ngx_parse_time's units: their rank (each may appear once, largest first) and seconds.
_TIME_UNITS = {
    "y": (1, 365 * 24 * 3600),
    "M": (2, 30 * 24 * 3600),
    "w": (3, 7 * 24 * 3600),
    "d": (4, 24 * 3600),
    "h": (5, 3600),
    "m": (6, 60),
    "s": (7, 1),
}
_RANK_MONTH, _RANK_SEC, _RANK_MSEC, _RANK_LAST = 2, 7, 8, 9


def atoi(text: str) -> int | None:
    """nginx's ``ngx_atoi``: ASCII digits only, no sign, no overflow; None if invalid."""
    if not text or not all("0" <= c <= "9" for c in text):
        return None
    value = int(text)
    return value if value <= MAX_INT_T else None


def parse_size(text: str) -> int | None:
    """nginx's ``ngx_parse_size``: ``123``, ``4k``, ``10M``, ``1g`` → bytes; None if invalid."""
    if not text:
        return None
    scale = _SIZE_UNITS.get(text[-1].lower())
    number = atoi(text[:-1] if scale else text)
    if number is None:
        return None
    total = number * (scale or 1)
    return total if total <= MAX_INT_T else None


def parse_time(text: str, *, msec: bool) -> float | None:
    """nginx's ``ngx_parse_time``: ``90s``, ``1h 30m``, ``500ms`` → seconds; None if invalid.

    A bare number is seconds. Units come largest first, each once; ``y`` and ``M`` only for
    directives nginx keeps in seconds, ``ms`` only for those it keeps in milliseconds.
    """
    unit_scale = 1000 if msec else 1  # nginx counts in ms or in s, per directive
    rank = _RANK_MONTH if msec else 0
    total = value = 0
    valid = False
    i = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if "0" <= ch <= "9":
            value = value * 10 + ord(ch) - ord("0")
            valid = True
            continue
        if ch == "m" and text.startswith("s", i):
            i += 1
            if not msec or rank >= _RANK_MSEC:
                return None
            rank, scale, most = _RANK_MSEC, 1, MAX_INT32
        elif ch == " ":
            if rank >= _RANK_SEC:
                return None
            rank, scale, most = _RANK_LAST, unit_scale, MAX_INT32 // unit_scale
        elif ch in _TIME_UNITS:
            unit_rank, seconds = _TIME_UNITS[ch]
            if rank >= unit_rank:
                return None
            rank, scale = unit_rank, seconds * unit_scale
            most = MAX_INT32 // seconds // unit_scale
        else:
            return None
        if value > most:
            return None
        total += value * scale
        if total > MAX_INT32:
            return None
        value = 0
        while i < len(text) and text[i] == " ":
            i += 1
    if not valid:
        return None
    total += value * unit_scale
    if total > MAX_INT_T:
        return None
    return total / unit_scale


def parse_flag(call: Call, value: str) -> bool:
    """``on``/``off`` in any case, else nginx's flag message."""
    if value.lower() == "on":
        return True
    if value.lower() == "off":
        return False
    raise call.error(
        f'invalid value "{value}" in "{call.name}" directive, it must be "on" or "off"'
    )


def flag(call: Call, field: str) -> None:
    if field in call.level.values:
        raise call.duplicate()
    call.store(field, parse_flag(call, call.args[0]))


def string(call: Call, field: str) -> None:
    call.set_once(field, call.args[0])


def _parsed(call: Call, field: str, value: object | None, reason: str) -> None:
    """Store a parsed scalar: once per level, nginx's ``"name" directive <reason>`` if bad."""
    if field in call.level.values:
        raise call.duplicate()
    if value is None:
        raise call.invalid(reason)
    call.store(field, value)


def number(call: Call, field: str) -> None:
    _parsed(call, field, atoi(call.args[0]), "invalid number")


def size(call: Call, field: str) -> None:
    _parsed(call, field, parse_size(call.args[0]), "invalid value")


def msec(call: Call, field: str) -> None:
    """A time kept by nginx in milliseconds (``500ms`` allowed)."""
    _parsed(call, field, parse_time(call.args[0], msec=True), "invalid value")


def sec(call: Call, field: str) -> None:
    """A time kept by nginx in seconds (``1y``, ``2M`` allowed, ``ms`` not)."""
    _parsed(call, field, parse_time(call.args[0], msec=False), "invalid value")


def enum_of(kind: type[enum.Enum]) -> Setter:
    """nginx's enum slot over an Enum whose values are the accepted words."""

    def setter(call: Call, field: str) -> None:
        if field in call.level.values:
            raise call.duplicate()
        word = call.args[0]
        for member in kind:
            if str(member.value).lower() == word.lower():
                call.store(field, member)
                return
        raise call.error(f'invalid value "{word}"')

    return setter


def bitmask_of(names: Sequence[str]) -> Setter:
    """nginx's bitmask slot: words from ``names`` (any case), kept in ``names`` order.

    Repeating the directive adds to the set and a repeated word is only a warning, as nginx.
    """

    def setter(call: Call, field: str) -> None:
        chosen = set(call.level.get(field, ()))  # type: ignore[call-overload]
        lowered = {name.lower(): name for name in names}
        for word in call.args:
            name = lowered.get(word.lower())
            if name is None:
                raise call.error(f'invalid value "{word}"')
            if name in chosen:
                call.warn(f'duplicate value "{word}"')
            chosen.add(name)
        call.store(field, tuple(name for name in names if name in chosen))

    return setter


def append_words(call: Call, field: str) -> None:
    """Every argument appended to a list (``ngx_mail_capabilities``, repeatable)."""
    current: tuple[str, ...] = call.level.get(field, ())  # type: ignore[assignment]
    call.store(field, current + call.args)


def append_pair(call: Call, field: str) -> None:
    """nginx's keyval slot: ``name value`` pairs, repeatable."""
    current: tuple[tuple[str, str], ...] = call.level.get(field, ())  # type: ignore[assignment]
    call.store(field, (*current, (call.args[0], call.args[1])))


def full_path(base: str, name: str) -> str:
    """nginx's ``ngx_get_full_name``: absolute names stay, others go under ``base``."""
    if name.startswith("/"):
        return name
    return os.path.normpath(os.path.join(base, name))


def conf_path(call: Call, name: str) -> str:
    """A file named in the configuration, as nginx resolves it (against the conf prefix)."""
    return full_path(call.state.conf_prefix, name)


def path(call: Call, field: str) -> None:
    """A file that mailgate reads (CA file, CRL, dhparam): made absolute, set once."""
    call.set_once(field, conf_path(call, call.args[0]))


def append_path(call: Call, field: str) -> None:
    """A repeatable file (ticket keys): made absolute, appended."""
    current: tuple[str, ...] = call.level.get(field, ())  # type: ignore[assignment]
    call.store(field, (*current, conf_path(call, call.args[0])))


def ignore(call: Call, field: str) -> None:
    """Parsed for compatibility and dropped."""
