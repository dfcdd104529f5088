"""Networks: libvirt's own (started when a VM needs one), and the addresses a guest holds."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt  # type: ignore[import-untyped]

from virtainer.errors import HypervisorError, NotFoundError
from virtainer.hypervisor.base import DomainBase
from virtainer.hypervisor.translate import no_raw_libvirt_errors


@dataclass(frozen=True)
class InterfaceAddress:
    mac: str
    address: str
    prefix: int
    source: str  # lease, agent or arp


_ADDRESS_SOURCES = (
    ("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
    ("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
    ("arp", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP),
)


@no_raw_libvirt_errors
class Addresses(DomainBase):
    def addresses(self, *, agent: bool = True) -> list[InterfaceAddress]:
        """IPv4 addresses from DHCP leases, the guest agent (unless agent=False: none is
        connected), then the ARP table."""
        for label, source in _ADDRESS_SOURCES:
            if label == "agent" and not agent:
                continue
            try:
                interfaces = self._domain.interfaceAddresses(source, 0) or {}
            except libvirt.libvirtError:
                continue
            found = [
                InterfaceAddress(str(iface.get("hwaddr") or ""), addr["addr"], int(addr["prefix"]), label)
                for ifname, iface in interfaces.items()
                if ifname != "lo"
                for addr in iface.get("addrs") or []
                if addr["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4 and not addr["addr"].startswith("127.")
            ]
            if found:
                return found
        return []


def ensure_network_active(conn: libvirt.virConnect, name: str) -> None:
    """Start a libvirt network (like `default`) if it is defined but inactive."""
    try:
        network = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        raise NotFoundError(
            f"libvirt network '{name}' does not exist",
            hint="use network=user or none, or define the network",
        ) from None
    if not network.isActive():
        try:
            network.create()
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot start network '{name}': {error.get_error_message()}") from None
