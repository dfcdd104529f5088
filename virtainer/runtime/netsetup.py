"""The VM takes over the container's network, so -p, --ip and user-defined networks work as with runc.

In the container's own network namespace (never the host's: the plan says so only when Docker gave
the container a namespace of its own), each ethN's addresses (IPv4 and IPv6), MAC and default
routes go to the VM's NIC N (several networks attached at create: eth0, eth1...): ethN is emptied
and given another MAC, then bridged with a tap that is the VM's NIC. The VM answers ARP and IPv6
neighbour solicitations for the container's addresses with the container's MAC, so Docker's
bridge, its port mappings and its iptables rules see no difference.

The host link: what must stay in the container (QEMU's VNC server, a way to Docker's resolver over
TCP) is reached by the guest at HOST_LINK, a link-local /32 on eth0's bridge, through relays in the
guest init (Docker's -p ends at the container's address, which is the VM's). Uses iproute2's `ip`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from virtainer.errors import VirtainerError
from virtainer.runtime.hostlink import DOCKER_DNS, HOST_LINK  # netsetup puts HOST_LINK on the bridge
from virtainer.runtime.plan import Nic

CONTAINER_NIC = "eth0"
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
DAEMON_JSON = Path("/etc/docker/daemon.json")  # dockerd's settings; its "dns" is what --dns defaults to
SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
DOCKER_DEFAULT_DNS = ("8.8.8.8", "8.8.4.4")
MAX_UPSTREAMS = 3  # the guest init's limit
TAP = "vt-tap{}"  # NIC N's tap and bridge
BRIDGE = "vt-br{}"


class NetworkError(VirtainerError):
    pass


def _ip(*args: str) -> Any:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return json.loads(done.stdout) if args[:1] == ("-j",) and done.stdout.strip() else None


def local_mac(seed: str) -> str:
    """A stable locally administered unicast MAC (for eth0 once the VM has the container's)."""
    import hashlib  # here: the supervisor imports this module, and hashlib maps libcrypto (~3 MiB)

    digest = hashlib.sha256(seed.encode()).digest()
    return "06:" + ":".join(f"{byte:02x}" for byte in digest[:5])


def take_over_network() -> list[Nic]:
    """Move each ethN's identity to a tap for the VM, in N's order; skipped: an ethN without IPv4.
    Its global IPv6 addresses and IPv6 default route go with it (the link-local one the guest's
    kernel makes itself, from the same MAC)."""
    links = {link["ifname"]: link for link in _ip("-j", "link", "show")}
    names = sorted((name for name in links if re.fullmatch(r"eth\d+", name)), key=lambda name: int(name[3:]))
    addresses = {name: [a for entry in _ip("-j", "addr", "show", "dev", name) for a in entry.get("addr_info", [])]
                 for name in names}  # fmt: skip
    ipv6 = {name: _global_ipv6(found) for name, found in addresses.items()}
    routes = _ip("-j", "route", "show", "default") or []
    routes6 = (_ip("-j", "-6", "route", "show", "default") or []) if any(ipv6.values()) else []
    nics: list[Nic] = []
    for name in names:
        ipv4 = [a for a in addresses[name] if a.get("family") == "inet"]
        if not ipv4:
            continue
        nic = Nic(
            mac=links[name]["address"],
            tap=TAP.format(len(nics)),
            address=ipv4[0]["local"],
            prefix=int(ipv4[0]["prefixlen"]),
            gateway=_gateway(routes, name),
            mtu=int(links[name].get("mtu", 1500)),
            ipv6=ipv6[name],
            gateway6=_gateway(routes6, name),
        )
        _bridge_to_tap(name, nic, BRIDGE.format(len(nics)))
        nics.append(nic)
    return nics


def _global_ipv6(addresses: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(f"{a['local']}/{a['prefixlen']}" for a in addresses
                 if a.get("family") == "inet6" and a.get("scope") == "global")  # fmt: skip


def _gateway(routes: list[dict[str, Any]], name: str) -> str | None:
    return next((route.get("gateway") for route in routes if route.get("dev") == name), None)


def _bridge_to_tap(name: str, nic: Nic, bridge: str) -> None:
    """ethN emptied, given another MAC and bridged with the tap that is the VM's NIC."""
    _ip("tuntap", "add", "dev", nic.tap, "mode", "tap")
    _ip("link", "add", bridge, "type", "bridge")
    _ip("link", "set", bridge, "address", local_mac(nic.mac + "bridge"), "mtu", str(nic.mtu))
    _ip("addr", "flush", "dev", name)
    _ip("link", "set", name, "down")
    _ip("link", "set", name, "address", local_mac(nic.mac))
    _ip("link", "set", name, "master", bridge, "up")
    _ip("link", "set", nic.tap, "master", bridge, "mtu", str(nic.mtu), "up")
    _ip("link", "set", bridge, "up")


def add_host_link(nic: Nic) -> str:
    """HOST_LINK on the first NIC's bridge, with a route back to the VM's address; HOST_LINK."""
    _ip("addr", "add", f"{HOST_LINK}/32", "dev", BRIDGE.format(0))
    _ip("route", "add", f"{nic.address}/32", "dev", BRIDGE.format(0))
    return HOST_LINK


def uses_docker_dns(resolv_conf: Path) -> bool:
    """True when the container's resolv.conf names Docker's embedded resolver (user networks)."""
    try:
        text = resolv_conf.read_text(errors="replace")
    except OSError:
        return False
    return re.search(rf"^\s*nameserver\s+{re.escape(DOCKER_DNS[0])}\s*$", text, re.MULTILINE) is not None


def docker_upstream_servers(
    container_record: Path | None = None, daemon_json: Path = DAEMON_JSON, resolv_conf: Path = HOST_RESOLV_CONF
) -> tuple[str, ...]:
    """The IPv4 servers dockerd's resolver forwards other names to, chosen as dockerd chooses them:
    the container's --dns (its hostconfig.json in container_record, dockerd's record of it), else
    daemon.json's "dns", else the host's resolv.conf servers, loopback ones left out
    (systemd-resolved's real ones in their place), else Google's. Loopback --dns servers are left
    out too: dockerd asks those from the host's namespace, which the guest cannot reach."""
    for path, key in ((container_record and container_record / "hostconfig.json", "Dns"), (daemon_json, "dns")):
        chosen = _usable(_listed_servers(path, key)) if path else ()
        if chosen:
            return chosen
    servers = _nameservers(resolv_conf)
    if not _usable(servers):
        servers = _nameservers(SYSTEMD_RESOLV_CONF)
    return _usable(servers) or DOCKER_DEFAULT_DNS


def _usable(servers: list[str]) -> tuple[str, ...]:
    """The IPv4 servers the guest can ask (not loopback), at most the guest init's limit."""
    ipv4 = [server for server in servers if _is_ipv4(server)]
    return tuple(server for server in ipv4 if not ipaddress.ip_address(server).is_loopback)[:MAX_UPSTREAMS]


def _listed_servers(path: Path, key: str) -> list[str]:
    """The list under KEY in a JSON file (dockerd's record or daemon.json); [] when unreadable."""
    try:
        servers = json.loads(path.read_text(errors="replace")).get(key)
    except (OSError, ValueError, AttributeError):
        return []
    return [str(server) for server in servers] if isinstance(servers, list) else []


def _nameservers(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return re.findall(r"^\s*nameserver\s+(\S+)", text, re.MULTILINE)


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False
