"""What every part of a domain handle holds: the connection, the looked-up domain, its name."""

from __future__ import annotations

import libvirt  # type: ignore[import-untyped]


class DomainBase:
    """One libvirt domain, looked up once (Hypervisor.domain): every method acts on it."""

    def __init__(self, conn: libvirt.virConnect, domain: libvirt.virDomain, name: str) -> None:
        self._conn = conn
        self._domain = domain
        self.name = name
