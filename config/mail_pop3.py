"""ngx_mail_pop3_module's directives (its command buffer is a fixed 128 bytes)."""

from __future__ import annotations

from mailgate.config import setters
from mailgate.config.directives import MAIL_OR_SERVER, MORE1, Directive

AUTH_METHODS = ("plain", "apop", "cram-md5", "external")

DIRECTIVES = (
    Directive(
        "pop3_capabilities", MAIL_OR_SERVER, MORE1, setters.append_words, "pop3_capabilities"
    ),
    Directive("pop3_auth", MAIL_OR_SERVER, MORE1, setters.bitmask_of(AUTH_METHODS), "pop3_auth"),
)
