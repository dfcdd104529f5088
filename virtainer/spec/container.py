"""What the virtainer container knows, and what it decides about the VM's network.

The controller gathers these facts before the spec exists (the container's routes, whether it
has NET_ADMIN, the ports it keeps for itself) and passes them to `resolve_spec`, so the spec
is decided once: the guest LAN is chosen to overlap none of the container's routes (nor
Docker's default 172.17.0.0/16: a guest that runs Docker itself puts docker0 there), port rules
are checked against the container's own ports, and without NET_ADMIN QEMU's user-mode
networking takes the NAT network's place.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from virtainer.errors import VirtainerError
from virtainer.spec.model import VNC_BASE_PORT, NetworkSpec, PortRange, PortRule, Protocol, VncSpec
from virtainer.spec.network import USER_DEFAULT_PORTS, check_port_targets, check_user_mode_ports, parse_port_rules
from virtainer.spec.reader import Reader

NAT_NETWORK = "default"  # the spec's default network, `network=default`: the container's NAT network
# Tried in order; the first that overlaps nothing wins.
CANDIDATE_SUBNETS = (
    "192.168.122.0/24",
    "192.168.123.0/24",
    "10.213.0.0/24",
    "172.31.213.0/24",
    "10.254.213.0/24",
    "192.168.213.0/24",
)
# Never used for the guest even when the container has no such route: a guest running Docker
# gives docker0 this subnet and would lose its way out.
RESERVED_SUBNETS = ("172.17.0.0/16",)


class NetworkSetupError(VirtainerError):
    """The guest network could not be set up inside the container."""


@dataclass(frozen=True)
class ReservedPort:
    """A port the container keeps for itself (never forwarded to the guest), and why."""

    protocol: Protocol
    ports: PortRange
    why: str

    def describe(self) -> str:
        first, last = self.ports
        return f"{self.protocol}/{first}{'' if first == last else f'-{last}'} ({self.why})"

    def overlaps(self, rule: PortRule) -> bool:
        first, last = rule.incoming
        return rule.protocol == self.protocol and first <= self.ports[1] and self.ports[0] <= last


@dataclass(frozen=True)
class ContainerFacts:
    """What the container is, as far as the spec is concerned."""

    routes: tuple[ipaddress.IPv4Network, ...] = ()
    net_admin: bool = True  # the NAT network needs it; without it, QEMU's user-mode networking
    api_ports: tuple[int, ...] = ()  # the REST API's
    reserved_ports: tuple[tuple[Protocol, PortRange], ...] = ()  # VIRTAINER_RESERVED_PORTS


def uses_nat_network(network: NetworkSpec) -> bool:
    return network.mode == "network" and network.source == NAT_NETWORK


def container_ports(vnc: VncSpec | None, facts: ContainerFacts) -> tuple[ReservedPort, ...]:
    """The container's own ports: the REST API's, VNC's (QEMU's server, in the container) and
    VIRTAINER_RESERVED_PORTS."""
    reserved = [ReservedPort("tcp", (port, port), "REST API") for port in facts.api_ports]
    if vnc is not None:
        port = vnc.port or VNC_BASE_PORT  # auto: libvirt takes the first free from 5900
        reserved.append(ReservedPort("tcp", (port, port), "VNC"))
    reserved += [ReservedPort(protocol, ports, "VIRTAINER_RESERVED_PORTS") for protocol, ports in facts.reserved_ports]
    return tuple(reserved)


def check_lan(lan: ipaddress.IPv4Network, routes: Iterable[ipaddress.IPv4Network]) -> str | None:
    """Why a LAN the user chose cannot be the guest's (it overlaps a route of the container)."""
    for route in routes:
        if lan.overlaps(route):
            return f"a LAN overlapping none of the container's routes ({lan} overlaps {route})"
    return None


def choose_subnet(
    routes: Iterable[ipaddress.IPv4Network], candidates: Sequence[str] = CANDIDATE_SUBNETS
) -> ipaddress.IPv4Network:
    taken = [*routes, *(ipaddress.IPv4Network(net) for net in RESERVED_SUBNETS)]
    for text in candidates:
        candidate = ipaddress.IPv4Network(text)
        if not any(candidate.overlaps(route) for route in taken):
            return candidate
    raise NetworkSetupError(
        f"no free subnet for the guest: every candidate overlaps a route of the container ({', '.join(candidates)})"
    )


def resolve_container_network(
    read: Reader, network: NetworkSpec, vnc: VncSpec | None, facts: ContainerFacts
) -> NetworkSpec:
    """The NAT network in this container: its LAN decided, its ports checked against the
    container's own; QEMU's user-mode networking in its place without NET_ADMIN."""
    if not uses_nat_network(network):
        return network
    if network.lan is None:
        network = replace(network, lan=choose_subnet(facts.routes))
    elif problem := check_lan(network.lan, facts.routes):
        raise read.fail("guest_lan", problem)
    check_port_targets(network, lambda accepted: read.fail("ports", accepted))
    for port in container_ports(vnc, facts):
        for rule in network.ports or ():
            if port.overlaps(rule):
                raise read.fail("ports", f"ports other than the container's own: {port.describe()}")
    return network if facts.net_admin else _user_mode_instead(read, network)


def _user_mode_instead(read: Reader, network: NetworkSpec) -> NetworkSpec:
    """No NET_ADMIN: QEMU's user-mode networking (outbound NAT in QEMU, inbound port by port).
    What it cannot do (guest forwards, isolation, keeping the guest off VNC) the controller's
    preflight refuses, naming the flag to add."""
    ports = network.ports if network.ports is not None else parse_port_rules(USER_DEFAULT_PORTS)
    network = replace(network, mode="user", source="", ports=ports, user_mode_fallback=True)
    check_user_mode_ports(network, lambda accepted: read.fail("ports", accepted))
    return network
