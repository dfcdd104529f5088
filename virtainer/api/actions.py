"""The API's side of the operations (virtainer/operations.py): each calls the core and converts
its result to the API's model. Blocking, one call each; the backend runs them on its pool.
"""

from __future__ import annotations

from virtainer import guest, operations
from virtainer.api import models
from virtainer.hypervisor import Domain, Hypervisor


def vm_status(hv: Hypervisor, name: str, with_guest_facts: bool = True) -> models.VmPublic:
    return models.vm_public(operations.status(hv, name, guest_facts=with_guest_facts))


def start(hv: Hypervisor, name: str) -> models.OperationResult:
    return models.operation_public(operations.start(hv, name))


def stop(hv: Hypervisor, name: str, timeout_s: float) -> models.OperationResult:
    return models.operation_public(operations.stop(hv, name, timeout_s))


def reboot(hv: Hypervisor, name: str) -> models.OperationResult:
    return models.operation_public(operations.reboot(hv, name))


def destroy(hv: Hypervisor, name: str) -> models.OperationResult:
    return models.operation_public(operations.destroy(hv, name))


# -- snapshots ----------------------------------------------------------------------------------


def list_snapshots(hv: Hypervisor, name: str) -> list[models.SnapshotPublic]:
    return [models.snapshot_public(snap) for snap in operations.list_snapshots(hv, name)]


def get_snapshot(hv: Hypervisor, name: str, snapshot: str) -> models.SnapshotPublic:
    return models.snapshot_public(operations.get_snapshot(hv, name, snapshot))


def create_snapshot(hv: Hypervisor, name: str, request: models.SnapshotCreate) -> models.SnapshotPublic:
    created = operations.create_snapshot(hv, name, request.name, request.kind, request.description)
    return models.snapshot_public(created)


def revert_snapshot(hv: Hypervisor, name: str, snapshot: str) -> models.RevertResult:
    return models.revert_public(operations.revert_snapshot(hv, name, snapshot))


def delete_snapshot(hv: Hypervisor, name: str, snapshot: str) -> None:
    operations.delete_snapshot(hv, name, snapshot)


# -- inside the guest (its agent) -------------------------------------------------------------


def guest_user(dom: Domain, user: str | None) -> str:
    """The user asked for, else the VM's cloud-init user, else root."""
    return user or dom.metadata().get("user") or "root"


def guest_facts(hv: Hypervisor, name: str) -> models.GuestFacts:
    return models.guest_facts_public(guest.facts(hv.domain(name)))


def list_keys(hv: Hypervisor, name: str, user: str | None) -> models.KeysList:
    dom = hv.domain(name)
    user = guest_user(dom, user)
    return models.KeysList(user=user, keys=guest.list_keys(dom, user))


def change_keys(hv: Hypervisor, name: str, change: models.KeysChange, remove: bool) -> models.KeysList:
    dom = hv.domain(name)
    user = guest_user(dom, change.user)
    operation = guest.remove_keys if remove else guest.add_keys
    return models.KeysList(user=user, keys=operation(dom, user, list(change.keys)))


def set_password(hv: Hypervisor, name: str, request: models.PasswordRequest) -> models.PasswordResult:
    dom = hv.domain(name)
    user = guest_user(dom, request.user)
    password = guest.set_password(dom, user, request.password)
    return models.PasswordResult(user=user, password=None if request.password else password)
