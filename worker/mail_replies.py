"""nginx's canned replies shared by auth_http and the backend login (``internal_server_error``
in the ``ngx_mail_*_module.c`` protocol structs, spec §3.6)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mailgate.config.model import Protocol

INTERNAL_SERVER_ERROR: Mapping[Protocol, bytes] = MappingProxyType(
    {
        Protocol.IMAP: b"* BAD internal server error\r\n",
        Protocol.POP3: b"-ERR internal server error\r\n",
        Protocol.SMTP: b"451 4.3.2 Internal server error\r\n",
    }
)
