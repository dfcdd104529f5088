"""/v1/events: lifecycle, readiness and operation events as server-sent events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from virtainer.api.deps import BackendDep
from virtainer.validators import NAME_MAX_LENGTH, NAME_PATTERN

router = APIRouter(prefix="/v1", tags=["events"])


@router.get(
    "/events",
    summary="Event stream (text/event-stream)",
    description="One SSE event per lifecycle change (libvirt), readiness stage and operation "
    "phase; `data` is JSON with `type`, `vm`, `at` and details. Idle streams get a comment every "
    "15 s.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}},
)
async def events(
    backend: BackendDep,
    vm: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)] = None,
) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(backend.events.stream(vm), media_type="text/event-stream", headers=headers)
