"""ngx_mail_auth_http_module's directives, and mailgate's ``proxy_pass`` that replaces it.

``auth_http`` is resolved once, here, and only its first address is used (as nginx).
``proxy_pass ADDRESS:PORT`` is mailgate's: every login goes to that backend, no auth server.
"""

from __future__ import annotations

import socket

from mailgate.config import setters
from mailgate.config.addresses import URLError, parse_url
from mailgate.config.directives import FLAG, MAIL_OR_SERVER, TAKE1, TAKE2, Call, Directive
from mailgate.config.model import Address, HttpURL

DEFAULT_PORT = 80


def auth_http(call: Call, field: str) -> None:
    # nginx checks no duplicate here: a later auth_http at the same level wins.
    text = call.args[0]
    if text[:8].lower() == "https://":
        raise call.error(
            f'auth_http "{text}" is not supported: mailgate talks plain HTTP to the auth server'
        )
    url_text = text[len("http://") :] if text.startswith("http://") else text
    try:
        url = parse_url(url_text, uri_part=True, default_port=DEFAULT_PORT)
    except URLError as err:
        raise call.error(f'{err} in auth_http "{url_text}"') from None
    first = url.addrs[0]
    is_unix = first.family == socket.AF_UNIX
    call.store(
        field,
        HttpURL(
            host="" if is_unix else first.host,
            port=first.port,
            uri=url.uri or "/",
            host_header="localhost" if is_unix else url.host,
            unix_path=first.host if is_unix else None,
            text=text,
        ),
    )


def proxy_pass(call: Call, field: str) -> None:
    text = call.args[0]
    try:
        url = parse_url(text)
    except URLError as err:
        raise call.error(f'{err} in "{text}" of the "proxy_pass" directive') from None
    if url.no_port and url.family != socket.AF_UNIX:
        raise call.error(f'no port in "{text}" of the "proxy_pass" directive')
    first = url.addrs[0]
    call.set_once(field, Address(first.host, first.port, first.family))


DIRECTIVES = (
    Directive("auth_http", MAIL_OR_SERVER, TAKE1, auth_http, "auth_http"),
    Directive("auth_http_timeout", MAIL_OR_SERVER, TAKE1, setters.msec, "auth_http_timeout"),
    Directive("auth_http_header", MAIL_OR_SERVER, TAKE2, setters.append_pair, "auth_http_header"),
    Directive(
        "auth_http_pass_client_cert",
        MAIL_OR_SERVER,
        FLAG,
        setters.flag,
        "auth_http_pass_client_cert",
    ),
    Directive("proxy_pass", MAIL_OR_SERVER, TAKE1, proxy_pass, "proxy_pass"),
)
