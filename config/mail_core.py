"""``mail {}``, ``server {}`` and ngx_mail_core_module's directives."""

from __future__ import annotations

from mailgate.config import logs, servers, setters
from mailgate.config.addresses import URLError, parse_url
from mailgate.config.directives import (
    BLOCK,
    MAIL_OR_SERVER,
    MORE1,
    TAKE1,
    Call,
    Context,
    Directive,
    Level,
    ServerLevel,
)
from mailgate.config.listen import listen
from mailgate.config.model import Protocol, Source

RESOLVER_PORT = 53


def mail_block(call: Call, field: str) -> None:
    """Parse the block, then merge and check its servers, as nginx does at its ``}``."""
    if call.state.mail is not None:
        raise call.duplicate()
    level = Level(Context.MAIL, call.source)
    call.state.mail = level
    call.parser.parse_block(level)
    call.state.built.extend(servers.build_all(call.state))


def server_block(call: Call, field: str) -> None:
    level = Level(Context.SERVER, Source(call.source.path, call.source.line))
    server = ServerLevel(level)
    call.state.servers.append(server)
    call.parser.parse_block(level)
    if not server.listens:
        raise servers.server_error('no "listen" is defined for server', level)


def protocol(call: Call, field: str) -> None:
    # nginx compares exactly (no case folding) and lets a later "protocol" win.
    for member in Protocol:
        if member.value == call.args[0]:
            call.store(field, member)
            return
    raise call.error(f'unknown protocol "{call.args[0]}"')


def _resolver_option(call: Call, word: str, options: dict[str, object]) -> bool:
    """Apply ``valid=``, ``ipv4=``, ``ipv6=``; False if ``word`` is an address."""
    key, sep, value = word.partition("=")
    if not sep or key not in ("valid", "ipv4", "ipv6"):
        return False
    if key == "valid":
        seconds = setters.parse_time(value, msec=False)
        if seconds is None:
            raise call.error(f"invalid parameter: {word}")
        options["resolver_valid"] = seconds
    elif value in ("on", "off"):
        options[f"resolver_{key}"] = value == "on"
    else:
        raise call.error(f"invalid parameter: {word}")
    return True


def resolver(call: Call, field: str) -> None:
    """All resolver settings are stored together: a level's resolver is inherited whole."""
    if field in call.level.values:
        raise call.duplicate()
    options: dict[str, object] = {
        "resolver_valid": None,
        "resolver_ipv4": True,
        "resolver_ipv6": True,
    }
    names: list[str] = []
    if call.args[0] != "off":
        for word in call.args:
            if _resolver_option(call, word, options):
                continue
            try:
                url = parse_url(word, default_port=RESOLVER_PORT)
            except URLError as err:
                raise call.error(f'{err} in resolver "{word}"') from None
            names.extend(addr.name for addr in url.addrs)
        if not options["resolver_ipv4"] and not options["resolver_ipv6"]:
            raise call.error('"ipv4" and "ipv6" cannot both be "off"')
    call.store(field, tuple(names))
    for key, value in options.items():
        call.store(key, value)


DIRECTIVES = (
    Directive("mail", Context.MAIN, BLOCK, mail_block),
    Directive("server", Context.MAIL, BLOCK, server_block),
    Directive("listen", Context.SERVER, MORE1, listen, "listens"),
    Directive("protocol", Context.SERVER, TAKE1, protocol, "protocol"),
    Directive("timeout", MAIL_OR_SERVER, TAKE1, setters.msec, "timeout"),
    Directive("server_name", MAIL_OR_SERVER, TAKE1, setters.string, "server_name"),
    Directive("error_log", MAIL_OR_SERVER, MORE1, logs.error_log, "error_log"),
    Directive("resolver", MAIL_OR_SERVER, MORE1, resolver, "resolver"),
    Directive("resolver_timeout", MAIL_OR_SERVER, TAKE1, setters.msec, "resolver_timeout"),
    Directive("max_errors", MAIL_OR_SERVER, TAKE1, setters.number, "max_errors"),
)
