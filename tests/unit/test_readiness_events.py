"""The readiness wait follows the domain's events: libvirt is asked for the state only after a
lifecycle event, and the guest agent nothing while its port is closed. With real guests:
tests/integration/test_guest_agent.py (the agent stage is reached through the connect event)."""

from __future__ import annotations

from typing import Any

import pytest

from virtainer.errors import AgentUnavailableError, HypervisorError
from virtainer.hypervisor import DomainState, DomainWatch
from virtainer.readiness import ReadinessProbe


class CountingDomain:
    """What a probe asks, counted; the agent answers only once `agent_up`."""

    name = "vm"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.current = DomainState.RUNNING
        self.agent_up = False

    def state(self) -> DomainState:
        self.calls.append("state")
        return self.current

    def addresses(self, *, agent: bool = True) -> list[Any]:
        self.calls.append(f"addresses(agent={agent})")
        return []

    def agent_command(self, command: dict[str, Any], timeout_s: int = 5) -> Any:
        self.calls.append(command["execute"])
        if not self.agent_up:
            raise AgentUnavailableError("not connected")
        return {"version": "7.2"} if command["execute"] == "guest-info" else 3


def probe_with(watch: DomainWatch) -> tuple[ReadinessProbe, CountingDomain]:
    dom = CountingDomain()
    return ReadinessProbe(dom, watch), dom  # type: ignore[arg-type]


def test_the_state_is_asked_again_only_after_a_lifecycle_event() -> None:
    watch = DomainWatch()
    probe, hv = probe_with(watch)
    assert [probe.running() for _ in range(5)] == [""] * 5
    assert hv.calls == ["state"]
    hv.current = DomainState.SHUT_OFF
    watch.on_lifecycle()
    with pytest.raises(HypervisorError, match="stopped while booting"):
        probe.running()
    assert hv.calls == ["state", "state"]


def test_without_events_every_check_asks_as_before() -> None:
    probe, hv = probe_with(DomainWatch(following=False))
    for _ in range(3):
        probe.running()
        probe.agent()
    assert hv.calls == ["state", "guest-info"] * 3


def test_the_agent_is_asked_nothing_while_its_port_is_closed() -> None:
    watch = DomainWatch()
    watch.agent_state_read(False, watch.agent_events)
    probe, hv = probe_with(watch)
    assert probe.agent() is None and probe.cloud_init() is None and probe.ip() is None
    assert hv.calls == ["addresses(agent=False)"]
    hv.agent_up = True
    watch.on_agent(True)  # qemu-ga opened its port in the guest
    assert probe.agent() == "qemu-ga 7.2"
    probe.ip()
    assert hv.calls[-2:] == ["guest-info", "addresses(agent=True)"]


def test_an_event_that_came_while_the_xml_was_read_wins() -> None:
    watch = DomainWatch()
    before = watch.agent_events
    watch.on_agent(True)  # delivered between the registration and the XML's answer
    watch.agent_state_read(False, before)
    assert watch.agent_connected is True
    unknown = DomainWatch()
    unknown.agent_state_read(None, unknown.agent_events)  # no agent channel in the XML
    probe, hv = probe_with(unknown)
    probe.agent()
    assert hv.calls == ["guest-info"]  # unknown: asked, as without events
