"""The guest's network inside the container.

The guest sits on a libvirt network (bridge + dnsmasq for DHCP/DNS) in `open` forward mode, so
libvirt adds no firewall rules of its own; this module owns them all, in chains of its own:

- `VIRTAINER-DNAT` (nat PREROUTING): every TCP and UDP packet addressed to the container itself
  and arriving from outside the guest LAN goes to the guest, except the controller's own ports.
  Published ports (`-p`) arrive the same way. Only the destination is rewritten: the guest sees
  the real client address.
- `VIRTAINER-MASQ` (nat POSTROUTING): the guest's own outbound traffic leaves with the container's
  address (masquerade); traffic towards the guest is never source-NATed.

The guest LAN is chosen to overlap none of the container's routes, nor Docker's default
172.17.0.0/16 (a guest that runs Docker itself puts docker0 there). The guest gets a fixed
address by its MAC, so the rules are in place before it boots.
"""

from __future__ import annotations

import ipaddress
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from virtainer.errors import VirtainerError

NETWORK_NAME = "default"  # the spec's default network: `network=default`
BRIDGE_NAME = "virtainer0"
DNAT_CHAIN = "VIRTAINER-DNAT"
MASQ_CHAIN = "VIRTAINER-MASQ"
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
LIBVIRT_NETWORK_DIR = Path("/etc/libvirt/qemu/networks")


class NetworkSetupError(VirtainerError):
    """The guest network could not be set up inside the container."""


@dataclass(frozen=True)
class GuestNetwork:
    subnet: ipaddress.IPv4Network
    mac: str

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @property
    def guest_ip(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 2

    @property
    def dhcp_range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return self.subnet.network_address + 100, self.subnet.broadcast_address - 1


def parse_routes(text: str) -> list[ipaddress.IPv4Network]:
    """Destinations from /proc/net/route (hex, little-endian), default route excluded."""
    routes: list[ipaddress.IPv4Network] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        destination = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        network = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
        if network.prefixlen > 0:
            routes.append(network)
    return routes


def container_routes(path: Path = Path("/proc/net/route")) -> list[ipaddress.IPv4Network]:
    return parse_routes(path.read_text())


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


def network_xml(net: GuestNetwork, *, name: str = NETWORK_NAME, bridge: str = BRIDGE_NAME) -> str:
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "forward", mode="open")
    ET.SubElement(root, "bridge", name=bridge, stp="off", delay="0")
    ip = ET.SubElement(root, "ip", address=str(net.gateway), netmask=str(net.subnet.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    start, end = net.dhcp_range
    ET.SubElement(dhcp, "range", start=str(start), end=str(end))
    ET.SubElement(dhcp, "host", mac=net.mac, ip=str(net.guest_ip))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_autostart_network(xml: str, *, name: str = NETWORK_NAME, directory: Path = LIBVIRT_NETWORK_DIR) -> None:
    """Define the network on disk, marked autostart: libvirtd starts it while it starts up."""
    (directory / "autostart").mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.xml"
    path.write_text(xml)
    link = directory / "autostart" / f"{name}.xml"
    if not link.is_symlink():
        link.unlink(missing_ok=True)
        link.symlink_to(path)


# ---------------------------------------------------------------------------------------------
# iptables


def dnat_rules(
    net: GuestNetwork, *, controller_ports: Sequence[int] = (), bridge: str = BRIDGE_NAME
) -> list[list[str]]:
    """Rules of the DNAT chain (nat table), as iptables argument lists."""
    chain = ["-A", DNAT_CHAIN]
    rules = [
        [*chain, "-i", bridge, "-j", "RETURN"],  # the guest's own traffic
        [*chain, "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "RETURN"],  # not for us
    ]
    if controller_ports:
        ports = ",".join(str(port) for port in controller_ports)
        rules.append([*chain, "-p", "tcp", "-m", "multiport", "--dports", ports, "-j", "RETURN"])
    for protocol in ("tcp", "udp"):
        rules.append([*chain, "-p", protocol, "-j", "DNAT", "--to-destination", str(net.guest_ip)])
    return rules


def masquerade_rules(net: GuestNetwork) -> list[list[str]]:
    subnet = str(net.subnet)
    return [["-A", MASQ_CHAIN, "-s", subnet, "!", "-d", subnet, "-j", "MASQUERADE"]]


def _iptables(*args: str, check: bool = True) -> bool:
    try:
        done = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NetworkSetupError("iptables is not installed in the image") from None
    if done.returncode != 0 and check:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise NetworkSetupError(f"iptables {' '.join(args)} failed: {detail[-1] if detail else 'no output'}")
    return done.returncode == 0


def _hook_chain(table: str, parent: str, chain: str) -> None:
    """Create (or empty) our chain and jump to it from the parent once, idempotently."""
    if not _iptables("-t", table, "-N", chain, check=False):
        _iptables("-t", table, "-F", chain)
    if not _iptables("-t", table, "-C", parent, "-j", chain, check=False):
        _iptables("-t", table, "-I", parent, "1", "-j", chain)


def install_rules(net: GuestNetwork, *, controller_ports: Sequence[int] = ()) -> None:
    _hook_chain("nat", "PREROUTING", DNAT_CHAIN)
    _hook_chain("nat", "POSTROUTING", MASQ_CHAIN)
    for rule in [*dnat_rules(net, controller_ports=controller_ports), *masquerade_rules(net)]:
        _iptables("-t", "nat", *rule)


def remove_rules() -> None:
    """Undo install_rules (a restarted container must not find them twice)."""
    for parent, chain in (("PREROUTING", DNAT_CHAIN), ("POSTROUTING", MASQ_CHAIN)):
        while _iptables("-t", "nat", "-D", parent, "-j", chain, check=False):
            pass
        _iptables("-t", "nat", "-F", chain, check=False)
        _iptables("-t", "nat", "-X", chain, check=False)
