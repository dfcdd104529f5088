"""/metrics: Prometheus text format (names in virtainer/api/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from virtainer.api.deps import BackendDep
from virtainer.api.metrics import ApiMetrics

router = APIRouter(tags=["metrics"])
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus 2.x reads


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    description="Per VM: state, CPU and vCPU time, memory, disk and NIC counters, readiness stage "
    "times, snapshots, diff size; for the server: requests, latencies, event-stream clients. "
    "Needs the token unless VIRTAINER_API_METRICS_AUTH=0 (or VIRTAINER_API_PUBLIC_READS=1).",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(request: Request, backend: BackendDep) -> Response:
    registry = _metrics(request).registry
    body = await backend.run(lambda _hv: generate_latest(registry))  # libvirt reads: off the event loop
    return Response(body, media_type=CONTENT_TYPE)


def _metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics
