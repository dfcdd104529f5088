"""/v1/vms/{name}/snapshots: disk-only and disk+memory snapshots kept inside the diff."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from virtainer.api import actions
from virtainer.api.deps import BackendDep, SnapName, VmName
from virtainer.api.errors import responses
from virtainer.api.models import RevertResult, SnapshotCreate, SnapshotPublic

router = APIRouter(prefix="/v1/vms/{name}/snapshots", tags=["snapshots"])
MUTATING = responses(404, 409, 422, 500)  # what an operation can answer


@router.get("", summary="Snapshots of a VM, oldest first", responses=responses(404, 409, 422))
async def list_snapshots(name: VmName, backend: BackendDep) -> list[SnapshotPublic]:
    backend.check_visible(name)
    return await backend.run(actions.list_snapshots, name)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Take a snapshot (disk, or disk+memory of a running VM)",
    description="A disk snapshot of a running VM is taken with the guest's filesystems frozen "
    "by the QEMU guest agent when the agent answers (`quiesced`).",
    responses=MUTATING,
)
async def create_snapshot(
    name: VmName, request: SnapshotCreate, backend: BackendDep, response: Response
) -> SnapshotPublic:
    created = await backend.operate(name, "snapshot", actions.create_snapshot, request)
    response.headers["Location"] = f"/v1/vms/{name}/snapshots/{created.name}"
    return created


@router.get("/{snapshot}", summary="One snapshot", responses=responses(404, 409, 422))
async def get_snapshot(name: VmName, snapshot: SnapName, backend: BackendDep) -> SnapshotPublic:
    backend.check_visible(name)
    return await backend.run(actions.get_snapshot, name, snapshot)


@router.delete("/{snapshot}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a snapshot", responses=MUTATING)
async def delete_snapshot(name: VmName, snapshot: SnapName, backend: BackendDep) -> Response:
    await backend.operate(name, "snapshot-delete", actions.delete_snapshot, snapshot)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{snapshot}/revert",
    summary="Revert to a snapshot, with the VM running or stopped",
    description="A memory snapshot resumes the VM where it was. A disk snapshot restores the "
    "disk: a running VM is powered off and started on it, a stopped VM stays stopped.",
    responses=MUTATING,
)
async def revert_snapshot(name: VmName, snapshot: SnapName, backend: BackendDep) -> RevertResult:
    result = await backend.operate(name, "revert", actions.revert_snapshot, snapshot)
    if result.state == "running":
        backend.track_readiness(name)  # a disk revert booted it again; a memory one resumed it
    return result
