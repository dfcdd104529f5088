"""A domain's events as they happen: its state changed, its guest agent connected or went away.

libvirt delivers them on its event loop (console.ensure_event_loop, started with every
Hypervisor). A wait that follows them need not ask libvirt every second whether the domain
still runs or whether an agent is there: each such question is a round trip through libvirtd
(and for the agent, through QEMU), CPU taken from a guest that is booting under TCG.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import libvirt  # type: ignore[import-untyped]
from lxml import etree  # type: ignore[import-untyped]

from virtainer.hypervisor.base import DomainBase
from virtainer.hypervisor.translate import no_raw_libvirt_errors

AGENT_CHANNEL = "org.qemu.guest_agent.0"


class DomainWatch:
    """What the events said since the watch began.

    `state_changed`: a lifecycle event came (stopped, crashed, paused, ...) since the caller last
    asked (`take_state_change`); before any, True, so the first check asks libvirt.
    `agent_connected`: the agent's port is open in the guest (qemu-ga runs); None when unknown
    (no events from this libvirt, or no agent channel): callers then ask the agent as before."""

    def __init__(self, *, following: bool = True) -> None:
        self.following = following  # False: libvirt delivers no events here, every check asks it
        self.agent_connected: bool | None = None
        self._state_changed = True
        self._agent_events = 0
        self._lock = threading.Lock()

    def take_state_change(self) -> bool:
        with self._lock:
            changed, self._state_changed = self._state_changed, not self.following
        return changed

    def on_lifecycle(self) -> None:
        with self._lock:
            self._state_changed = True

    def on_agent(self, connected: bool) -> None:
        with self._lock:
            self._agent_events += 1
            self.agent_connected = connected

    def agent_state_read(self, connected: bool | None, events_before: int) -> None:
        """The agent's state as the domain XML gave it, unless an event came meanwhile."""
        with self._lock:
            if self._agent_events == events_before:
                self.agent_connected = connected

    @property
    def agent_events(self) -> int:
        return self._agent_events


@no_raw_libvirt_errors
class Events(DomainBase):
    @contextlib.contextmanager
    def watch(self) -> Iterator[DomainWatch]:
        """Follow this domain's lifecycle and agent events while the block runs. Where libvirt
        cannot deliver them, the watch knows nothing and every check asks libvirt as before."""
        watch = DomainWatch()
        handles: list[int] = []
        try:
            handles.append(self._register(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda *_: watch.on_lifecycle()))
            handles.append(self._register(libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, _agent_relay(watch)))
            before = watch.agent_events
            watch.agent_state_read(self._agent_port_state(), before)
        except libvirt.libvirtError:
            self._deregister(handles)
            handles, watch = [], DomainWatch(following=False)
        try:
            yield watch
        finally:
            self._deregister(handles)

    def _register(self, event_id: int, callback: object) -> int:
        return int(self._conn.domainEventRegisterAny(self._domain, event_id, callback, None))

    def _deregister(self, handles: list[int]) -> None:
        for handle in handles:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.domainEventDeregisterAny(handle)

    def _agent_port_state(self) -> bool | None:
        """connected/disconnected, as the live XML has the agent channel; None without one."""
        document = etree.fromstring(str(self._domain.XMLDesc(0)).encode())
        for target in document.iterfind("devices/channel/target"):
            if target.get("name") == AGENT_CHANNEL and target.get("state") in ("connected", "disconnected"):
                return bool(target.get("state") == "connected")
        return None


def _agent_relay(watch: DomainWatch) -> object:
    def relay(_conn: object, _dom: object, state: int, _reason: int, _opaque: object) -> None:
        watch.on_agent(state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED)

    return relay
