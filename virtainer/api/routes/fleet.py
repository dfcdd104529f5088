"""/v1/fleet: this API's VMs and those of its peers (VIRTAINER_API_PEERS), asked in parallel."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from virtainer.api.deps import BackendDep
from virtainer.api.fleet import FleetMember, Source, gather, member_public

router = APIRouter(prefix="/v1/fleet", tags=["fleet"])


@router.get("", summary="The VMs of this API and of every peer; an unreachable peer has its error")
async def list_fleet(request: Request, backend: BackendDep) -> list[FleetMember]:
    own = FleetMember(source="self", url=str(request.base_url).rstrip("/"), vms=await backend.statuses())
    token = str(request.app.state.token)  # peers of one fleet share its token (or open their reads)
    peers = [Source(url, url, token) for url in backend.settings.peers]
    return [own, *[member_public(member) for member in await asyncio.to_thread(gather, peers)]]
