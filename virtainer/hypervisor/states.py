"""What libvirt says about a domain, in virtainer's words: its state, why it is off, its events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import libvirt  # type: ignore[import-untyped]


class DomainState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    SHUT_OFF = "shut-off"
    CRASHED = "crashed"
    SUSPENDED = "suspended"
    OTHER = "other"
    UNDEFINED = "undefined"

    @property
    def active(self) -> bool:
        """The domain has a QEMU process (libvirt's isActive): it runs, is paused, suspended or
        shutting down. The one answer to "is it on" for every operation and wait."""
        return self not in (DomainState.SHUT_OFF, DomainState.CRASHED, DomainState.UNDEFINED)

    @property
    def defined(self) -> bool:
        return self != DomainState.UNDEFINED


STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.SUSPENDED,
}

SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "lost while libvirtd was down",
}


def state_of(code: int) -> DomainState:
    return STATES.get(code, DomainState.OTHER)


@dataclass(frozen=True)
class DomainStats:
    """One domain's counters from libvirt's bulk stats (getAllDomainStats), keys as libvirt names
    them ("cpu.time", "block.0.wr.bytes", "balloon.rss", ...; see virsh domstats)."""

    name: str
    state: DomainState
    values: dict[str, Any]


_LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
_STOPPED_DETAIL = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "from-snapshot",
}


def lifecycle_names(event: int, detail: int) -> tuple[str, str]:
    kind = _LIFECYCLE.get(event, "other")
    return kind, _STOPPED_DETAIL.get(detail, str(detail)) if kind == "stopped" else str(detail)
