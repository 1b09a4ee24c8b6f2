"""The users Dovecot knows and the auth server routes: name -> password."""

from __future__ import annotations

from collections.abc import Mapping

USERS: Mapping[str, str] = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
