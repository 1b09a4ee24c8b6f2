"""ngx_mail_realip_module: ``set_real_ip_from address | CIDR | unix: | hostname``."""

from __future__ import annotations

import ipaddress

from mailgate.config.addresses import URLError, resolve
from mailgate.config.directives import MAIL_OR_SERVER, TAKE1, Call, Directive
from mailgate.config.model import IPNetwork
from mailgate.config.setters import atoi

UNIX = "unix:"


def _cidr(call: Call, text: str) -> IPNetwork | None:
    """nginx's ``ngx_ptocidr``: ``addr`` or ``addr/bits``; None if it is not one."""
    address, sep, bits_text = text.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    bits = atoi(bits_text) if sep else ip.max_prefixlen
    if bits is None or bits > ip.max_prefixlen:
        return None
    network = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
    if network.network_address != ip:
        call.warn(f"low address bits of {text} are meaningless")
    return network


def _networks(call: Call, text: str) -> tuple[IPNetwork | str, ...]:
    if text == UNIX:
        return (UNIX,)
    network = _cidr(call, text)
    if network is not None:
        return (network,)
    try:
        # A host name stands for all its addresses, each as a single-host network.
        addrs = resolve(text, 0)
    except URLError as err:
        raise call.error(f'{err} in set_real_ip_from "{text}"') from None
    return tuple(ipaddress.ip_network(addr.host) for addr in addrs)


def set_real_ip_from(call: Call, field: str) -> None:
    current: tuple[IPNetwork | str, ...] = call.level.get(field, ())  # type: ignore[assignment]
    call.store(field, current + _networks(call, call.args[0]))


DIRECTIVES = (
    Directive("set_real_ip_from", MAIL_OR_SERVER, TAKE1, set_real_ip_from, "set_real_ip_from"),
)
