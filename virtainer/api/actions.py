"""The operations the API and the CLI offer, on local libvirt: blocking, one call each.

Wrong states are refused with ConflictError (HTTP 409): starting a running VM, stopping a stopped
one. Each returns the API's JSON shape, so the CLI's local and remote modes print the same thing.
"""

from __future__ import annotations

import time

from virtainer import guest, machine, snapshots
from virtainer.api import models
from virtainer.errors import ConflictError, HypervisorError, NotFoundError
from virtainer.hypervisor import DomainState, Hypervisor


def require_vm(hv: Hypervisor, name: str) -> DomainState:
    state = hv.state(name)
    if state == DomainState.UNDEFINED:
        raise NotFoundError(f"no VM named '{name}'")
    return state


def require_running(hv: Hypervisor, name: str, operation: str) -> None:
    state = require_vm(hv, name)
    if not state.active:
        raise ConflictError(f"cannot {operation} VM '{name}': it is {state.value}", hint="start it first")


def wanted_stages(hv: Hypervisor, name: str) -> tuple[str, ...]:
    wanted = hv.metadata(name).get("wait-for", "running")
    return tuple(stage for stage in wanted.split(",") if stage) or ("running",)


def vm_status(hv: Hypervisor, name: str, operation: str | None = None, guest_facts: bool = True) -> models.VmPublic:
    return models.vm_public(machine.status(hv, name, guest_facts=guest_facts), wanted_stages(hv, name), operation)


def start(hv: Hypervisor, name: str) -> models.OperationResult:
    started = time.monotonic()
    state = require_vm(hv, name)
    if state.active:
        raise ConflictError(f"VM '{name}' is already {state.value}")
    hv.start(name)
    return _result(hv, name, "start", started)


def stop(hv: Hypervisor, name: str, timeout_s: float) -> models.OperationResult:
    """Graceful (agent, then ACPI); destroyed only when timeout_s passes. Says which happened."""
    started = time.monotonic()
    require_running(hv, name, "stop")
    done = machine.stop(hv, name, timeout_s)
    result = _result(hv, name, "stop", started)
    return result.model_copy(update={"method": done.method, "graceful": done.graceful})


def reboot(hv: Hypervisor, name: str) -> models.OperationResult:
    started = time.monotonic()
    require_running(hv, name, "reboot")
    method = "agent" if machine._agent_answers(hv, name) else "acpi"  # same probe as stop
    try:
        hv.reboot(name, agent=method == "agent")
    except HypervisorError:
        if method == "acpi":
            raise
        method = "acpi"
        hv.reboot(name, agent=False)
    return _result(hv, name, "reboot", started).model_copy(update={"method": method})


def destroy(hv: Hypervisor, name: str) -> models.OperationResult:
    started = time.monotonic()
    require_running(hv, name, "destroy")
    machine.destroy(hv, name)
    return _result(hv, name, "destroy", started).model_copy(update={"method": "destroy"})


def _result(hv: Hypervisor, name: str, operation: str, started: float) -> models.OperationResult:
    elapsed = round(time.monotonic() - started, 2)
    return models.OperationResult(vm=name, operation=operation, state=hv.state(name).value, elapsed_s=elapsed)


# -- snapshots ----------------------------------------------------------------------------------


def list_snapshots(hv: Hypervisor, name: str) -> list[models.SnapshotPublic]:
    require_vm(hv, name)
    return [models.snapshot_public(snap) for snap in snapshots.list_snapshots(hv, name)]


def get_snapshot(hv: Hypervisor, name: str, snapshot: str) -> models.SnapshotPublic:
    require_vm(hv, name)
    return models.snapshot_public(snapshots.get(hv, name, snapshot))


def create_snapshot(hv: Hypervisor, name: str, request: models.SnapshotCreate) -> models.SnapshotPublic:
    require_vm(hv, name)
    created = snapshots.create(hv, name, name=request.name, kind=request.kind, description=request.description)
    return models.snapshot_public(created)


def revert_snapshot(hv: Hypervisor, name: str, snapshot: str) -> models.RevertResult:
    require_vm(hv, name)
    return models.revert_public(snapshots.revert(hv, name, snapshot))


def delete_snapshot(hv: Hypervisor, name: str, snapshot: str) -> None:
    require_vm(hv, name)
    snapshots.delete(hv, name, snapshot)


# -- inside the guest (its agent) -------------------------------------------------------------


def guest_user(hv: Hypervisor, name: str, user: str | None) -> str:
    """The user asked for, else the VM's cloud-init user, else root."""
    require_vm(hv, name)
    return user or hv.metadata(name).get("user") or "root"


def guest_facts(hv: Hypervisor, name: str) -> models.GuestFacts:
    require_vm(hv, name)
    return models.guest_facts_public(guest.facts(hv, name))


def list_keys(hv: Hypervisor, name: str, user: str | None) -> models.KeysList:
    user = guest_user(hv, name, user)
    return models.KeysList(user=user, keys=guest.list_keys(hv, name, user))


def change_keys(hv: Hypervisor, name: str, change: models.KeysChange, remove: bool) -> models.KeysList:
    user = guest_user(hv, name, change.user)
    operation = guest.remove_keys if remove else guest.add_keys
    return models.KeysList(user=user, keys=operation(hv, name, user, list(change.keys)))


def set_password(hv: Hypervisor, name: str, request: models.PasswordRequest) -> models.PasswordResult:
    user = guest_user(hv, name, request.user)
    password = guest.set_password(hv, name, user, request.password)
    return models.PasswordResult(user=user, password=None if request.password else password)
