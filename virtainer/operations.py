"""The operations on a defined VM, and the state rules they share: status, start, stop, reboot,
destroy and snapshots. The one home of those rules for every front end: the CLI calls these, the
REST API converts their results to its models (virtainer/api/models.py), one shape each.

State rules (the same for `virtainer down|stop|destroy` and the API):
- a VM that is not defined: NotFoundError;
- start of a VM that is active (running, paused, suspended, shutting down): ConflictError;
- stop, reboot and destroy of a VM that is not (shut off, crashed): ConflictError;
- snapshots: a memory snapshot needs a running VM; the rest work in either state (snapshots.py).

Results are plain dataclasses; `as_dict` gives the one JSON shape of each (`status --json` and
`GET /v1/vms/{name}` print the same).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtainer import guest, machine, snapshots, storage
from virtainer.diff_files import DiffFiles
from virtainer.domain_model import recorded_stages
from virtainer.errors import ConflictError, HypervisorError
from virtainer.guest import GuestFacts
from virtainer.hypervisor import Domain, DomainState, Hypervisor, InterfaceAddress
from virtainer.readiness import Readiness, StageRecord
from virtainer.spec import READINESS_FILE
from virtainer.stages import missing_stages


@dataclass(frozen=True)
class OperationResult:
    vm: str
    operation: str  # start, stop, reboot or destroy
    state: str  # the VM's state afterwards
    elapsed_s: float
    method: str | None = None  # stop and reboot: agent, acpi; stop and destroy: destroy
    graceful: bool | None = None  # stop: False when the timeout forced a destroy


@dataclass(frozen=True)
class VmReadiness:
    ready: bool  # running, and every wanted stage reached
    wanted: list[str]
    stages: list[StageRecord]

    @property
    def missing(self) -> list[str]:
        return missing_stages(self.wanted, (record.stage for record in self.stages))


@dataclass(frozen=True)
class DiffBase:
    sha256: str
    virtual_size: int
    format: str
    path: str  # where the base was last found


@dataclass(frozen=True)
class VmDiff:
    path: str
    base: DiffBase | None  # None: a standalone system disk, or no base record


@dataclass(frozen=True)
class VmStatus:
    name: str
    state: str
    accelerator: str
    accelerator_reason: str
    vcpus: int
    memory_mib: int
    addresses: list[InterfaceAddress]
    readiness: VmReadiness
    diff: VmDiff
    operation: str | None = None  # the operation in progress (the API's), if any
    guest: GuestFacts | None = None  # what the guest agent reports, when one answers


def as_dict(result: OperationResult | VmStatus) -> dict[str, Any]:
    """The one JSON shape of a result (the API's models have the same fields)."""
    return dataclasses.asdict(result)


# -- state rules ----------------------------------------------------------------------------


def _require_active(dom: Domain, operation: str) -> None:
    state = machine.defined_state(dom)
    if not state.active:
        raise ConflictError(f"cannot {operation} VM '{dom.name}': it is {state.value}", hint="start it first")


# -- status ---------------------------------------------------------------------------------


def status(hv: Hypervisor, name: str, *, guest_facts: bool = True) -> VmStatus:
    """State, resources, addresses, readiness, diff; with guest_facts, what the agent reports."""
    domain = hv.domain(name)
    state = machine.defined_state(domain)
    metadata = domain.metadata()
    vcpus, memory_mib = domain.info()
    running = state == DomainState.RUNNING
    facts = None
    if running and guest_facts:
        with contextlib.suppress(HypervisorError):  # no agent (yet): no facts
            facts = guest.facts(domain, patient=False)
    diff_path = metadata.get("diff", "")
    return VmStatus(
        name=name,
        state=state.value,
        accelerator=metadata.get("accelerator", ""),
        accelerator_reason=metadata.get("accelerator-reason", ""),
        vcpus=vcpus,
        memory_mib=memory_mib,
        addresses=domain.addresses() if running else [],
        readiness=_readiness(metadata.get("state-dir") if running else None, recorded_stages(metadata), running),
        diff=VmDiff(diff_path, _diff_base(diff_path)),
        guest=facts,
    )


def _readiness(state_dir: str | None, wanted: tuple[str, ...], running: bool) -> VmReadiness:
    record = Readiness.load(Path(state_dir) / READINESS_FILE) if state_dir else None
    stages = record.records() if record else []
    ready = running and not missing_stages(wanted, (stage.stage for stage in stages))
    return VmReadiness(ready, list(wanted), stages)


def _diff_base(diff_path: str) -> DiffBase | None:
    if not diff_path:
        return None
    try:
        record = storage.BaseRecord.from_json(DiffFiles(Path(diff_path)).base_record.read_text())
    except (OSError, ValueError, KeyError):
        return None
    return DiffBase(**dataclasses.asdict(record.identity), path=record.path)


# -- power ----------------------------------------------------------------------------------


def start(hv: Hypervisor, name: str) -> OperationResult:
    started = time.monotonic()
    dom = hv.domain(name)
    state = machine.defined_state(dom)
    if state.active:
        raise ConflictError(f"VM '{name}' is already {state.value}")
    dom.start()
    return _result(dom, "start", started)


def stop(hv: Hypervisor, name: str, timeout_s: float) -> OperationResult:
    """Graceful (agent, then ACPI); destroyed only when timeout_s passes. Says which happened."""
    started = time.monotonic()
    dom = hv.domain(name)
    _require_active(dom, "stop")
    done = machine.stop_domain(dom, timeout_s)
    return _result(dom, "stop", started, method=done.method, graceful=done.graceful)


def reboot(hv: Hypervisor, name: str) -> OperationResult:
    started = time.monotonic()
    dom = hv.domain(name)
    _require_active(dom, "reboot")
    method = "agent" if machine.agent_answers(dom) else "acpi"  # same probe as stop
    try:
        dom.reboot(agent=method == "agent")
    except HypervisorError:
        if method == "acpi":
            raise
        method = "acpi"
        dom.reboot(agent=False)
    return _result(dom, "reboot", started, method=method)


def destroy(hv: Hypervisor, name: str) -> OperationResult:
    started = time.monotonic()
    dom = hv.domain(name)
    _require_active(dom, "destroy")
    dom.destroy()
    return _result(dom, "destroy", started, method="destroy")


def _result(
    dom: Domain, operation: str, started: float, method: str | None = None, graceful: bool | None = None
) -> OperationResult:
    elapsed = round(time.monotonic() - started, 2)
    return OperationResult(dom.name, operation, dom.state().value, elapsed, method, graceful)


# -- snapshots ------------------------------------------------------------------------------
# Each looks the VM up once, in snapshots.py (hv.domain: NotFoundError when there is none).


def list_snapshots(hv: Hypervisor, name: str) -> list[snapshots.Snapshot]:
    return snapshots.list_snapshots(hv, name)


def get_snapshot(hv: Hypervisor, name: str, snapshot: str) -> snapshots.Snapshot:
    return snapshots.get(hv, name, snapshot)


def create_snapshot(
    hv: Hypervisor, name: str, snapshot: str | None, kind: snapshots.SnapshotKind = "disk", description: str = ""
) -> snapshots.Snapshot:
    return snapshots.create(hv, name, name=snapshot, kind=kind, description=description)


def revert_snapshot(hv: Hypervisor, name: str, snapshot: str) -> snapshots.RevertResult:
    return snapshots.revert(hv, name, snapshot)


def delete_snapshot(hv: Hypervisor, name: str, snapshot: str) -> None:
    snapshots.delete(hv, name, snapshot)
