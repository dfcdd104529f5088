"""A domain handle: one libvirt domain looked up once, with every per-domain operation on it."""

from __future__ import annotations

from virtainer.hypervisor.agent import Agent
from virtainer.hypervisor.console import Console
from virtainer.hypervisor.events import Events
from virtainer.hypervisor.lifecycle import Lifecycle
from virtainer.hypervisor.networks import Addresses
from virtainer.hypervisor.snapshots import Snapshots


class Domain(Lifecycle, Snapshots, Agent, Console, Addresses, Events):
    """What `Hypervisor.domain(name)` returns: its methods act on the domain it looked up.

    Fetch one per operation: a domain redefined or libvirtd reconnected since needs a new one."""
