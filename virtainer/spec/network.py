"""The guest network's settings: parsed, and checked against each other.

Ports, guest forwards, isolation and the guest LAN are carried out by the virtainer
container's NAT network (iptables), or by QEMU's user-mode networking (port by port).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from virtainer.spec.model import GuestForward, NetworkSpec, PortRange, PortRule, Protocol
from virtainer.spec.parsers import is_ascii_number
from virtainer.validators import Invalid

USER_FORWARDS_MAX = 1024  # user-mode networking forwards port by port: one hostfwd each
USER_DEFAULT_PORTS = "tcp:22"  # what user-mode networking forwards in the container without rules


def parse_network(value: object) -> NetworkSpec:
    text = str(value).strip()
    accepted = "default, network:NAME, bridge:NAME, user or none"
    if text in ("default", "nat"):
        return NetworkSpec("network", "default")
    if text in ("user", "none"):
        return NetworkSpec(text, "")  # type: ignore[arg-type]
    kind, _, name = text.partition(":")
    if kind in ("network", "bridge") and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}", name):
        return NetworkSpec(kind, name)  # type: ignore[arg-type]
    raise Invalid(accepted)


PORTS_FORM = (
    "blank-separated rules [tcp:|udp:]PORT[:GUEST-PORT], a PORT may be a range FIRST-LAST "
    "(tcp:8080:80 udp:5353:53 tcp:9000-9010), GUEST-PORT may follow an address in the guest LAN "
    "(tcp:2222:192.168.122.5:22); or none"
)
FORWARDS_FORM = "blank-separated [tcp:|udp:]TARGET-IP:TARGET-PORT:REAL-IP:REAL-PORT (tcp:10.9.9.9:80:172.17.0.1:8080)"


def _port_range(text: str) -> PortRange:
    match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", text)
    if not match:
        raise Invalid(PORTS_FORM)
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if not 1 <= first <= last <= 65535:
        raise Invalid(f"{PORTS_FORM}; ports from 1 to 65535, a range FIRST-LAST with FIRST <= LAST")
    return first, last


def _list_items(value: object) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(item).strip() for item in value if str(item).strip()]
    return [item for item in re.split(r"[\s,;]+", str(value).strip()) if item]


def parse_port_rule(text: str) -> PortRule:
    fields = text.split(":")
    protocol: Protocol = "tcp"
    if fields[0].lower() in ("tcp", "udp"):
        protocol = fields.pop(0).lower()  # type: ignore[assignment]
    target = None
    if len(fields) == 3:
        try:
            target = ipaddress.IPv4Address(fields.pop(1))
        except ValueError:
            raise Invalid(f"{PORTS_FORM}; an IPv4 address before the guest port") from None
        if target.is_unspecified or target.is_loopback or target.is_multicast:
            raise Invalid(f"{PORTS_FORM}; an address in the guest LAN before the guest port")
    if len(fields) not in (1, 2):
        raise Invalid(PORTS_FORM)
    incoming = _port_range(fields[0])
    guest = _port_range(fields[-1])
    if incoming[1] - incoming[0] != guest[1] - guest[0]:
        raise Invalid(f"{PORTS_FORM}; a range maps to a range of the same length")
    return PortRule(protocol, incoming, guest, target)


def parse_port_rules(value: object) -> tuple[PortRule, ...]:
    items = _list_items(value)
    if items == ["none"]:
        return ()
    if not items:
        raise Invalid(PORTS_FORM)
    rules = tuple(parse_port_rule(item) for item in items)
    taken: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    for rule in rules:
        ports = set(range(rule.incoming[0], rule.incoming[1] + 1))
        if ports & taken[rule.protocol]:
            raise Invalid(f"{PORTS_FORM}; each incoming {rule.protocol} port in one rule only")
        taken[rule.protocol] |= ports
    return rules


def _forward_address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise Invalid(f"{FORWARDS_FORM}; {what} must be an IPv4 address") from None
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_reserved:
        raise Invalid(f"{FORWARDS_FORM}; {what} must be a unicast address, not loopback or 0.0.0.0")
    return address


def parse_guest_forward(text: str) -> GuestForward:
    fields = text.split(":")
    protocol: Protocol = "tcp"
    if fields[0].lower() in ("tcp", "udp"):
        protocol = fields.pop(0).lower()  # type: ignore[assignment]
    if len(fields) != 4:
        raise Invalid(FORWARDS_FORM)
    ports = []
    for port in (fields[1], fields[3]):
        if not is_ascii_number(port, digits=5) or not 1 <= int(port) <= 65535:
            raise Invalid(f"{FORWARDS_FORM}; ports from 1 to 65535")
        ports.append(int(port))
    target = _forward_address(fields[0], "TARGET-IP")
    real = _forward_address(fields[2], "REAL-IP")
    return GuestForward(protocol, target, ports[0], real, ports[1])


def parse_guest_forwards(value: object) -> tuple[GuestForward, ...]:
    items = _list_items(value)
    if not items:
        raise Invalid(FORWARDS_FORM)
    forwards = tuple(parse_guest_forward(item) for item in items)
    seen = [(forward.protocol, forward.target, forward.target_port) for forward in forwards]
    if len(set(seen)) != len(seen):
        raise Invalid(f"{FORWARDS_FORM}; each TARGET-IP:TARGET-PORT once")
    return forwards


# Where a guest LAN can never be: "this network", loopback, link-local, multicast, reserved, broadcast
_NOT_A_LAN = tuple(
    ipaddress.IPv4Network(net) for net in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
)


def parse_lan(value: object) -> ipaddress.IPv4Network:
    accepted = (
        "an IPv4 network address with its prefix, /8 to /29, e.g. 192.168.199.0/24, outside 0.0.0.0/8, "
        "loopback, link-local, multicast and 240.0.0.0/4"
    )
    try:
        lan = ipaddress.IPv4Network(str(value).strip())
    except ValueError:
        raise Invalid(accepted) from None
    if not 8 <= lan.prefixlen <= 29 or any(lan.overlaps(reserved) for reserved in _NOT_A_LAN):
        raise Invalid(accepted)
    return lan


def check_user_mode_ports(network: NetworkSpec, fail: Callable[[str], Exception]) -> None:
    count = sum(len(rule.pairs()) for rule in network.ports or ())
    if count > USER_FORWARDS_MAX:
        raise fail(
            f"at most {USER_FORWARDS_MAX} ports with user-mode networking (QEMU forwards port by port; "
            f"these rules name {count})"
        )


def check_port_targets(network: NetworkSpec, fail: Callable[[str], Exception]) -> None:
    """A rule's target address (other than the guest's own) must lie in the guest LAN."""
    if network.lan is None:
        return
    for rule in network.ports or ():
        if rule.target is not None and rule.target not in network.lan:
            raise fail(f"target addresses inside the guest LAN {network.lan} ({rule.target} is not)")
