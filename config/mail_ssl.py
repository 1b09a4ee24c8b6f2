"""ngx_mail_ssl_module's directives.

Certificates and keys are not loaded here: the TLS layer does that (and ``-t``). nginx's
removed ``ssl on|off`` has no row, so it gets nginx's own answer, ``unknown directive``.
"""

from __future__ import annotations

from mailgate.config import setters
from mailgate.config.directives import (
    FLAG,
    MAIL_OR_SERVER,
    MORE1,
    TAKE1,
    TAKE2,
    TAKE12,
    Call,
    Directive,
)
from mailgate.config.model import ConfCommand, StartTLS, VerifyClient
from mailgate.config.setters import atoi, conf_path, parse_size

PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
REFUSED_PROTOCOLS = ("SSLv2", "SSLv3")
REFUSED_KEY_SCHEMES = ("engine:", "store:")
PAGE_SIZE = 4096
# nginx refuses a shared cache smaller than 8 pages.
MIN_SHARED_CACHE = 8 * PAGE_SIZE
DEFAULT_BUILTIN_SESSIONS = 20480

_protocols_bitmask = setters.bitmask_of(PROTOCOLS)


def _pem_source(call: Call, value: str) -> str:
    """A certificate or key: ``data:`` PEM kept as written, a file made absolute."""
    return value if value.startswith("data:") else conf_path(call, value)


def certificate(call: Call, field: str) -> None:
    current: tuple[str, ...] = call.level.get(field, ())  # type: ignore[assignment]
    raw: tuple[str, ...] = call.level.get(f"{field}_raw", ())  # type: ignore[assignment]
    call.store(field, (*current, _pem_source(call, call.args[0])))
    call.store(f"{field}_raw", (*raw, call.args[0]))


def certificate_key(call: Call, field: str) -> None:
    if call.args[0].startswith(REFUSED_KEY_SCHEMES):
        raise call.error(
            f'"{call.name}" directive: "{call.args[0]}" is not supported by mailgate, '
            "only PEM files and data: keys are"
        )
    current: tuple[str, ...] = call.level.get(field, ())  # type: ignore[assignment]
    call.store(field, (*current, _pem_source(call, call.args[0])))


def conf_command(call: Call, field: str) -> None:
    """``ssl_conf_command NAME VALUE``, repeatable; applied in order by the TLS layer."""
    current: tuple[ConfCommand, ...] = call.level.get(field, ())  # type: ignore[assignment]
    name, value = call.args
    call.store(field, (*current, ConfCommand(name, value, call.state.conf_prefix, call.source)))


def protocols(call: Call, field: str) -> None:
    _protocols_bitmask(call, field)
    for word in call.args:
        if word.lower() in (p.lower() for p in REFUSED_PROTOCOLS):
            raise call.error(
                f'"{call.name}" directive: "{word}" is not supported by mailgate, '
                "use TLSv1.2 or TLSv1.3"
            )


def _cache_word(call: Call, word: str) -> tuple[str, object]:
    """One word of ``ssl_session_cache``: which part it sets and to what."""
    invalid = call.error(f'invalid session cache "{word}"')
    if word == "off":
        return "mode", ("off", 0)
    if word == "none":
        return "mode", ("none", 0)
    if word == "builtin":
        return "mode", ("builtin", DEFAULT_BUILTIN_SESSIONS)
    if word.startswith("builtin:") and len(word) > len("builtin:"):
        sessions = atoi(word[len("builtin:") :])
        if sessions is None:
            raise invalid
        return "mode", ("builtin", sessions)
    if word.startswith("shared:") and len(word) > len("shared:"):
        name, sep, size_text = word[len("shared:") :].partition(":")
        if not name or not sep:
            raise invalid
        size = parse_size(size_text)
        if size is None:
            raise invalid
        if size < MIN_SHARED_CACHE:
            raise call.error(f'session cache "{word}" is too small')
        return "shared", (name, size)
    raise invalid


def session_cache(call: Call, field: str) -> None:
    """nginx keeps the built-in mode and the shared zone apart, and merges them apart."""
    parts = dict(_cache_word(call, word) for word in call.args)
    if "shared" in parts:
        call.store("ssl_session_cache_shared", parts["shared"])
        # "shared" alone turns the per-worker OpenSSL cache off.
        parts.setdefault("mode", ("none", 0))
    call.store("ssl_session_cache_mode", parts["mode"])


DIRECTIVES = (
    Directive("starttls", MAIL_OR_SERVER, TAKE1, setters.enum_of(StartTLS), "starttls"),
    Directive("ssl_certificate", MAIL_OR_SERVER, TAKE1, certificate, "ssl_certificate"),
    Directive("ssl_certificate_key", MAIL_OR_SERVER, TAKE1, certificate_key, "ssl_certificate_key"),
    Directive("ssl_password_file", MAIL_OR_SERVER, TAKE1, setters.path, "ssl_password_file"),
    Directive(
        "ssl_certificate_compression",
        MAIL_OR_SERVER,
        FLAG,
        setters.flag,
        "ssl_certificate_compression",
    ),
    Directive("ssl_dhparam", MAIL_OR_SERVER, TAKE1, setters.path, "ssl_dhparam"),
    Directive("ssl_ecdh_curve", MAIL_OR_SERVER, TAKE1, setters.string, "ssl_ecdh_curve"),
    Directive("ssl_protocols", MAIL_OR_SERVER, MORE1, protocols, "ssl_protocols"),
    Directive("ssl_ciphers", MAIL_OR_SERVER, TAKE1, setters.string, "ssl_ciphers"),
    Directive(
        "ssl_prefer_server_ciphers",
        MAIL_OR_SERVER,
        FLAG,
        setters.flag,
        "ssl_prefer_server_ciphers",
    ),
    Directive("ssl_session_cache", MAIL_OR_SERVER, TAKE12, session_cache, "ssl_session_cache"),
    Directive("ssl_session_tickets", MAIL_OR_SERVER, FLAG, setters.flag, "ssl_session_tickets"),
    Directive(
        "ssl_session_ticket_key",
        MAIL_OR_SERVER,
        TAKE1,
        setters.append_path,
        "ssl_session_ticket_key",
    ),
    Directive("ssl_session_timeout", MAIL_OR_SERVER, TAKE1, setters.sec, "ssl_session_timeout"),
    Directive(
        "ssl_verify_client",
        MAIL_OR_SERVER,
        TAKE1,
        setters.enum_of(VerifyClient),
        "ssl_verify_client",
    ),
    Directive("ssl_verify_depth", MAIL_OR_SERVER, TAKE1, setters.number, "ssl_verify_depth"),
    Directive(
        "ssl_client_certificate", MAIL_OR_SERVER, TAKE1, setters.path, "ssl_client_certificate"
    ),
    Directive(
        "ssl_trusted_certificate", MAIL_OR_SERVER, TAKE1, setters.path, "ssl_trusted_certificate"
    ),
    Directive("ssl_crl", MAIL_OR_SERVER, TAKE1, setters.path, "ssl_crl"),
    Directive("ssl_conf_command", MAIL_OR_SERVER, TAKE2, conf_command, "ssl_conf_command"),
)
