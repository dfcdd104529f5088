"""libvirt, and only here: every libvirt call and libvirt error of virtainer goes through this package.

By concern: `connection` (the host, defining domains, `Hypervisor.domain(name)`: a handle looked
up once per operation), `lifecycle`, `snapshots`, `agent` and `console` (the guest agent, the
serial console and screen), `networks`, `events` (a domain's lifecycle and agent events, for
waits); `translate` turns libvirt errors into virtainer's, `states` names what libvirt reports.
"""

from virtainer.hypervisor.connection import DEFAULT_URI, Hypervisor
from virtainer.hypervisor.console import ConsoleStream, VncEndpoint
from virtainer.hypervisor.events import DomainWatch
from virtainer.hypervisor.handle import Domain
from virtainer.hypervisor.networks import InterfaceAddress
from virtainer.hypervisor.states import DomainState, DomainStats

__all__ = [
    "DEFAULT_URI",
    "ConsoleStream",
    "Domain",
    "DomainState",
    "DomainStats",
    "DomainWatch",
    "Hypervisor",
    "InterfaceAddress",
    "VncEndpoint",
]
