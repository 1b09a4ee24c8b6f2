"""ngx_mail_proxy_module's directives, with ``proxy_protocol on|off|v2`` towards the backend."""

from __future__ import annotations

from mailgate.config import setters
from mailgate.config.directives import FLAG, MAIL_OR_SERVER, TAKE1, Directive
from mailgate.config.model import ProxyProtocolOut

DIRECTIVES = (
    # "proxy" is parsed and merged by nginx but never read: a no-op here too.
    Directive("proxy", MAIL_OR_SERVER, FLAG, setters.flag, "proxy"),
    Directive("proxy_buffer", MAIL_OR_SERVER, TAKE1, setters.size, "proxy_buffer"),
    Directive("proxy_timeout", MAIL_OR_SERVER, TAKE1, setters.msec, "proxy_timeout"),
    Directive(
        "proxy_pass_error_message",
        MAIL_OR_SERVER,
        FLAG,
        setters.flag,
        "proxy_pass_error_message",
    ),
    Directive("xclient", MAIL_OR_SERVER, FLAG, setters.flag, "xclient"),
    Directive("proxy_smtp_auth", MAIL_OR_SERVER, FLAG, setters.flag, "proxy_smtp_auth"),
    Directive(
        "proxy_protocol",
        MAIL_OR_SERVER,
        TAKE1,
        setters.enum_of(ProxyProtocolOut),
        "proxy_protocol",
    ),
)
