"""The VM takes over the container's network, so -p, --ip and user-defined networks work as with runc.

In the container's own network namespace (never the host's: the plan says so only when Docker gave
the container a namespace of its own), eth0's address, MAC and default route go to the VM:
eth0 is emptied and given another MAC, then bridged with a tap that is the VM's NIC. The VM answers
ARP for the container's address with the container's MAC, so Docker's bridge, its port mappings
and its iptables rules see no difference. Uses iproute2's `ip` (JSON output).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

from virtainer.errors import VirtainerError
from virtainer.runtime.vm import Nic

CONTAINER_NIC = "eth0"
# Docker's embedded resolver on user-defined networks: only in the container's network namespace
DOCKER_DNS = ("127.0.0.11", 53)
DNS_TIMEOUT_S = 5.0
DNS_MAX_BYTES = 4096
TAP = "vt-tap0"
BRIDGE = "vt-br0"


class NetworkError(VirtainerError):
    pass


def _ip(*args: str) -> Any:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return json.loads(done.stdout) if args[:1] == ("-j",) and done.stdout.strip() else None


def local_mac(seed: str) -> str:
    """A stable locally administered unicast MAC (for eth0 once the VM has the container's)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "06:" + ":".join(f"{byte:02x}" for byte in digest[:5])


def take_over_network() -> list[Nic]:
    """Move eth0's identity to a tap for the VM; [] when the container has no eth0 or no IPv4."""
    links = {link["ifname"]: link for link in _ip("-j", "link", "show")}
    if CONTAINER_NIC not in links:
        return []
    link = links[CONTAINER_NIC]
    addresses = [a for entry in _ip("-j", "addr", "show", "dev", CONTAINER_NIC) for a in entry.get("addr_info", [])]
    ipv4 = [a for a in addresses if a.get("family") == "inet"]
    if not ipv4:
        return []
    routes = _ip("-j", "route", "show", "default") or []
    gateway = next((route.get("gateway") for route in routes if route.get("dev") == CONTAINER_NIC), None)
    nic = Nic(
        mac=link["address"],
        tap=TAP,
        address=ipv4[0]["local"],
        prefix=int(ipv4[0]["prefixlen"]),
        gateway=gateway,
        mtu=int(link.get("mtu", 1500)),
    )
    _ip("tuntap", "add", "dev", TAP, "mode", "tap")
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("link", "set", BRIDGE, "address", local_mac(nic.mac + "bridge"), "mtu", str(nic.mtu))
    _ip("addr", "flush", "dev", CONTAINER_NIC)
    _ip("link", "set", CONTAINER_NIC, "down")
    _ip("link", "set", CONTAINER_NIC, "address", local_mac(nic.mac))
    _ip("link", "set", CONTAINER_NIC, "master", BRIDGE, "up")
    _ip("link", "set", TAP, "master", BRIDGE, "mtu", str(nic.mtu), "up")
    _ip("link", "set", BRIDGE, "up")
    return [nic]


def uses_docker_dns(resolv_conf: Path) -> bool:
    """True when the container's resolv.conf names Docker's embedded resolver (user networks)."""
    try:
        text = resolv_conf.read_text(errors="replace")
    except OSError:
        return False
    return re.search(rf"^\s*nameserver\s+{re.escape(DOCKER_DNS[0])}\s*$", text, re.MULTILINE) is not None


def ask_docker_dns(query: bytes) -> bytes:
    """One DNS query, over UDP, to Docker's resolver in this namespace; its answer (OSError if none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DNS_TIMEOUT_S)
        sock.connect(DOCKER_DNS)
        sock.send(query[:DNS_MAX_BYTES])
        return sock.recv(DNS_MAX_BYTES)
