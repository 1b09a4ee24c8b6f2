"""ngx_mail_imap_module's directives."""

from __future__ import annotations

from mailgate.config import setters
from mailgate.config.directives import MAIL_OR_SERVER, MORE1, TAKE1, Directive

# Listed in nginx's bitmask order, which is the order they are advertised in.
AUTH_METHODS = ("plain", "login", "cram-md5", "external")

DIRECTIVES = (
    Directive("imap_client_buffer", MAIL_OR_SERVER, TAKE1, setters.size, "imap_client_buffer"),
    Directive(
        "imap_capabilities", MAIL_OR_SERVER, MORE1, setters.append_words, "imap_capabilities"
    ),
    Directive("imap_auth", MAIL_OR_SERVER, MORE1, setters.bitmask_of(AUTH_METHODS), "imap_auth"),
)
