"""ngx_mail_smtp_module's directives."""

from __future__ import annotations

from mailgate.config import setters
from mailgate.config.directives import MAIL_OR_SERVER, MORE1, TAKE1, Directive

# "none" lets MAIL FROM / RCPT TO through unauthenticated (routed by auth_http).
AUTH_METHODS = ("plain", "login", "cram-md5", "external", "none")

DIRECTIVES = (
    Directive("smtp_client_buffer", MAIL_OR_SERVER, TAKE1, setters.size, "smtp_client_buffer"),
    Directive("smtp_greeting_delay", MAIL_OR_SERVER, TAKE1, setters.msec, "smtp_greeting_delay"),
    Directive(
        "smtp_capabilities", MAIL_OR_SERVER, MORE1, setters.append_words, "smtp_capabilities"
    ),
    Directive("smtp_auth", MAIL_OR_SERVER, MORE1, setters.bitmask_of(AUTH_METHODS), "smtp_auth"),
)
