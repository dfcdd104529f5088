"""The guest's network inside the container.

The guest sits on a libvirt network (bridge + dnsmasq for DHCP/DNS) in `open` forward mode, so
libvirt adds no firewall rules of its own; this module owns them all, in chains of its own that
are flushed and filled again at every start and removed at the end (a restart never doubles them):

- `VIRTAINER-DNAT` (nat PREROUTING): packets addressed to the container itself and arriving from
  outside the guest LAN go to the guest: on every TCP and UDP port except the container's own
  (reserved) ports, or, with explicit port rules, on those ports only. Published ports (`-p`)
  arrive the same way. Only the destination is rewritten: the guest sees the real client address.
  The guest's forwards are here too: a guest connection to TARGET:PORT goes to REAL:PORT.
- `VIRTAINER-MASQ` (nat POSTROUTING): the guest's own outbound traffic leaves with the container's
  address (masquerade); traffic towards the guest is never source-NATed.
- `VIRTAINER-INPUT` (filter INPUT), always: the guest reaches none of the container's control
  ports (the REST API, VNC) at any address of the container (its gateway included), unless
  VIRTAINER_GUEST_CONTROL_ACCESS=1 opens them (`guarded` empty).
- `VIRTAINER-FWD` (filter FORWARD) and more of `VIRTAINER-INPUT`, only when the guest is
  isolated: from the guest LAN, only replies, the guest's own forwards and DHCP pass.

The guest LAN is chosen by the spec (`virtainer.spec.container`) to overlap none of the
container's routes. The guest gets a fixed address by its MAC, so the rules are in place
before it boots.
"""

from __future__ import annotations

import ipaddress
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

# CANDIDATE_SUBNETS, RESERVED_SUBNETS, check_lan, choose_subnet: decided by the spec, re-exported as network.X
from virtainer.spec import CANDIDATE_SUBNETS as CANDIDATE_SUBNETS
from virtainer.spec import NAT_NETWORK, GuestForward, NetworkSetupError, PortRange, PortRule, ReservedPort
from virtainer.spec import RESERVED_SUBNETS as RESERVED_SUBNETS
from virtainer.spec import check_lan as check_lan
from virtainer.spec import choose_subnet as choose_subnet

NETWORK_NAME = NAT_NETWORK
BRIDGE_NAME = "virtainer0"
DNAT_CHAIN = "VIRTAINER-DNAT"
MASQ_CHAIN = "VIRTAINER-MASQ"
FORWARD_CHAIN = "VIRTAINER-FWD"
INPUT_CHAIN = "VIRTAINER-INPUT"
# (table, parent chain, our chain)
CHAINS = (
    ("nat", "PREROUTING", DNAT_CHAIN),
    ("nat", "POSTROUTING", MASQ_CHAIN),
    ("filter", "FORWARD", FORWARD_CHAIN),
    ("filter", "INPUT", INPUT_CHAIN),
)
LIBVIRT_NETWORK_DIR = Path("/etc/libvirt/qemu/networks")


@dataclass(frozen=True)
class GuestNetwork:
    subnet: ipaddress.IPv4Network
    mac: str
    ports: tuple[PortRule, ...] | None = None  # None: every port but the reserved ones
    forwards: tuple[GuestForward, ...] = ()
    restrict: bool = False
    reserved: tuple[ReservedPort, ...] = ()
    guarded: tuple[ReservedPort, ...] = ()  # container ports the guest itself may not reach

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @property
    def guest_ip(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 2

    @property
    def dhcp_range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        """Addresses for other MACs (the guest's own is fixed): from .100 in a /24, .3 in a /29."""
        start = min(100, self.subnet.num_addresses // 2)
        return self.subnet.network_address + max(start, 3), self.subnet.broadcast_address - 1


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


def _dports(ports: PortRange) -> str:
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}:{ports[1]}"


def dnat_rules(net: GuestNetwork, *, bridge: str = BRIDGE_NAME) -> list[list[str]]:
    """Rules of the DNAT chain (nat table), as iptables argument lists."""
    chain = ["-A", DNAT_CHAIN]
    rules = [
        # the guest's forwards: its connection to TARGET:PORT goes to REAL:PORT
        [*chain, "-i", bridge, "-p", forward.protocol, "-d", str(forward.target), "--dport", str(forward.target_port),
         "-j", "DNAT", "--to-destination", f"{forward.real}:{forward.real_port}"]
        for forward in net.forwards
    ]  # fmt: skip
    rules += [
        [*chain, "-i", bridge, "-j", "RETURN"],  # the guest's own traffic
        [*chain, "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "RETURN"],  # not for us
    ]
    if net.ports is None:  # every port, except the container's own
        for port in net.reserved:
            rules.append([*chain, "-p", port.protocol, "--dport", _dports(port.ports), "-j", "RETURN"])
        for protocol in ("tcp", "udp"):
            rules.append([*chain, "-p", protocol, "-j", "DNAT", "--to-destination", str(net.guest_ip)])
        return rules
    for rule in net.ports:
        destination = str(rule.target or net.guest_ip)
        if rule.incoming == rule.guest:
            rules.append([*chain, "-p", rule.protocol, "--dport", _dports(rule.incoming),
                          "-j", "DNAT", "--to-destination", destination])  # fmt: skip
            continue
        for incoming, guest in rule.pairs():  # a shifted range: port by port
            rules.append([*chain, "-p", rule.protocol, "--dport", str(incoming),
                          "-j", "DNAT", "--to-destination", f"{destination}:{guest}"])  # fmt: skip
    return rules


def masquerade_rules(net: GuestNetwork) -> list[list[str]]:
    subnet = str(net.subnet)
    return [["-A", MASQ_CHAIN, "-s", subnet, "!", "-d", subnet, "-j", "MASQUERADE"]]


def guard_rules(net: GuestNetwork, *, bridge: str = BRIDGE_NAME) -> list[list[str]]:
    """The guest's own connections to the container's control ports are refused (a TCP reset:
    the guest sees a closed port, at the gateway address as at any other of the container's)."""
    return [
        ["-A", INPUT_CHAIN, "-i", bridge, "-p", port.protocol, "--dport", _dports(port.ports),
         "-j", "REJECT", *(["--reject-with", "tcp-reset"] if port.protocol == "tcp" else [])]
        for port in net.guarded
    ]  # fmt: skip


def isolation_rules(net: GuestNetwork, *, bridge: str = BRIDGE_NAME) -> list[list[str]]:
    """Filter rules when the guest is isolated: from its LAN only replies (to inbound redirects
    and to the container's own probes), its explicit forwards (DNATed), and DHCP pass."""
    if not net.restrict:
        return []
    rules: list[list[str]] = []
    for chain in (FORWARD_CHAIN, INPUT_CHAIN):
        from_guest = ["-A", chain, "-i", bridge]
        rules += [
            [*from_guest, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            [*from_guest, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"],
        ]
        if chain == INPUT_CHAIN:
            rules.append([*from_guest, "-p", "udp", "--dport", "67", "-j", "ACCEPT"])  # DHCP from dnsmasq
        rules.append([*from_guest, "-j", "REJECT"])
    return rules


def rule_table(rule: list[str]) -> str:
    return "filter" if rule[1] in (FORWARD_CHAIN, INPUT_CHAIN) else "nat"


def _iptables(*args: str, check: bool = True) -> bool:
    try:
        done = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NetworkSetupError("iptables is not installed in the image") from None
    if done.returncode != 0 and check:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise NetworkSetupError(f"iptables {' '.join(args)} failed: {detail[-1] if detail else 'no output'}")
    return done.returncode == 0


def all_rules(net: GuestNetwork) -> list[list[str]]:
    return [*dnat_rules(net), *masquerade_rules(net), *guard_rules(net), *isolation_rules(net)]


def install_rules(net: GuestNetwork) -> None:
    """Our chains, emptied and filled again: installing twice leaves the rules of one install.

    One iptables-restore for all of it, where one iptables run per chain and rule took ~15
    processes on the start's critical path, before the domain is defined."""
    _run_iptables_tool("iptables-restore", "--noflush", "-w", stdin=restore_input(net, hooked_chains()))


def restore_input(net: GuestNetwork, hooked: set[tuple[str, str]]) -> str:
    """iptables-restore's input (with --noflush: nobody else's rules change). Declaring a chain
    creates it, or empties it when it exists; a parent jumps to it once: the jump is inserted
    (first, as before libvirt's) only where `hooked` (parent, chain) has none yet."""
    rules = all_rules(net)
    lines: list[str] = []
    for table in dict.fromkeys(table for table, _, _ in CHAINS):
        ours = [(parent, chain) for chain_table, parent, chain in CHAINS if chain_table == table]
        lines.append(f"*{table}")
        lines += [f":{chain} - [0:0]" for _, chain in ours]
        lines += [f"-I {parent} 1 -j {chain}" for parent, chain in ours if (parent, chain) not in hooked]
        lines += [_restore_line(rule) for rule in rules if rule_table(rule) == table]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _restore_line(rule: list[str]) -> str:
    # iptables-restore splits on blanks and knows no shell quoting: no argument may hold one
    if any(not word or any(blank in word for blank in " \t\n\"'") for word in rule):
        raise NetworkSetupError(f"an iptables rule argument holds a blank or quote: {rule}")
    return " ".join(rule)


def hooked_chains() -> set[tuple[str, str]]:
    """The (parent, chain) jumps to our chains that are already there (a restarted container)."""
    listing = _run_iptables_tool("iptables-save")
    ours = {chain for _, _, chain in CHAINS}
    hooked = set()
    for line in listing.splitlines():
        words = line.split()
        if len(words) == 4 and words[0] == "-A" and words[2] == "-j" and words[3] in ours:
            hooked.add((words[1], words[3]))
    return hooked


def _run_iptables_tool(*argv: str, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NetworkSetupError("iptables is not installed in the image") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise NetworkSetupError(f"{argv[0]} failed: {detail[-1] if detail else 'no output'}")
    return done.stdout


def remove_rules() -> None:
    """Undo install_rules (a restarted container must not find them twice)."""
    for table, parent, chain in CHAINS:
        while _iptables("-t", table, "-D", parent, "-j", chain, check=False):
            pass
        _iptables("-t", table, "-F", chain, check=False)
        _iptables("-t", table, "-X", chain, check=False)
