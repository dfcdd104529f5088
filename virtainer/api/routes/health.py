"""/healthz (the controller is alive) and /readyz (the VM is ready), for health checks."""

from __future__ import annotations

from fastapi import APIRouter

from virtainer.api.deps import BackendDep
from virtainer.api.errors import responses
from virtainer.api.models import Health, Ready
from virtainer.errors import ErrorKind, NotFoundError, VirtainerError
from virtainer.stages import missing_stages

router = APIRouter(tags=["health"])


class NotReady(VirtainerError):
    kind = ErrorKind.UNAVAILABLE


@router.get("/healthz", summary="The API process is alive")
async def healthz(backend: BackendDep) -> Health:
    try:
        libvirt = await backend.run(lambda hv: hv.alive())
    except VirtainerError:
        if not backend.settings.docker:
            raise
        libvirt = False  # manager mode: the engine's containers are its work, not a libvirt here
    return Health(status="ok", libvirt=libvirt)


@router.get(
    "/readyz", summary="The VM is running and every readiness stage it waits for is reached", responses=responses(503)
)
async def readyz(backend: BackendDep) -> Ready:
    vm = backend.settings.readiness_vm
    if vm is None:  # no VM of its own (`virtainer serve` on a host): ready when libvirt answers
        await backend.names()
        return Ready(ready=True, vm=None, stages=[])
    try:
        status = await backend.status(vm)
    except NotFoundError:
        raise NotReady(f"VM '{vm}' is not defined yet") from None
    if not status.readiness.ready:
        missing = missing_stages(status.readiness.wanted, (record.stage for record in status.readiness.stages))
        raise NotReady(f"VM '{vm}' is {status.state}; waiting for: {', '.join(missing) or 'running'}")
    return Ready(ready=True, vm=vm, stages=status.readiness.stages)
