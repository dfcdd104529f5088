"""/v1/vms: status, and the power operations (start, stop, reboot, destroy)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from virtainer.api import actions
from virtainer.api.deps import BackendDep, VmName
from virtainer.api.errors import responses
from virtainer.api.models import OperationResult, StopRequest, VmPublic

router = APIRouter(prefix="/v1/vms", tags=["vms"])
MUTATING = responses(404, 409, 422, 500)  # what an operation can answer


@router.get("", summary="All VMs")
async def list_vms(backend: BackendDep) -> list[VmPublic]:
    return await backend.statuses()


@router.get(
    "/{name}",
    summary="One VM: state, resources, addresses, readiness, diff",
    response_model=VmPublic,
    responses=responses(404, 422),
)
async def get_vm(name: VmName, backend: BackendDep) -> Response:
    # pre-encoded: the most polled route skips per-request validation and serialisation
    return Response(await backend.status_json(name), media_type="application/json")


@router.post("/{name}/start", summary="Start a stopped VM", responses=MUTATING)
async def start_vm(name: VmName, backend: BackendDep) -> OperationResult:
    result = await backend.operate(name, "start", actions.start)
    backend.track_readiness(name)
    return result


@router.post(
    "/{name}/stop",
    summary="Graceful stop: guest agent, then ACPI; destroyed when the timeout passes",
    description="Returns once the VM is off. `graceful` says whether the guest powered itself "
    "off (`method` agent or acpi) or the timeout forced a destroy.",
    responses=MUTATING,
)
async def stop_vm(
    name: VmName, backend: BackendDep, request: Annotated[StopRequest | None, Body()] = None
) -> OperationResult:
    timeout_s = request.timeout_s if request else backend.settings.stop_timeout_s
    return await backend.operate(name, "stop", actions.stop, timeout_s)


@router.post("/{name}/reboot", summary="Reboot through the guest agent or ACPI", responses=MUTATING)
async def reboot_vm(name: VmName, backend: BackendDep) -> OperationResult:
    return await backend.operate(name, "reboot", actions.reboot)


@router.post("/{name}/destroy", summary="Power off at once (the diff is kept)", responses=MUTATING)
async def destroy_vm(name: VmName, backend: BackendDep) -> OperationResult:
    return await backend.operate(name, "destroy", actions.destroy)
