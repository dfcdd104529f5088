"""create_app(settings): the FastAPI application. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

import virtainer
from virtainer.api.auth import bearer, resolve_token
from virtainer.api.backend import Backend, OnReady
from virtainer.api.console import Consoles
from virtainer.api.errors import install_error_handlers, responses
from virtainer.api.events import EventHub
from virtainer.api.gate import Gate
from virtainer.api.metrics import ApiMetrics, RequestMetrics, VmCollector
from virtainer.api.routes import console, events, fleet, guest, health, metrics, snapshots, ui, vms
from virtainer.api.session import Sessions
from virtainer.api.settings import ApiSettings

if TYPE_CHECKING:
    from virtainer.orchestration.engine import Engine

DESCRIPTION = """Start, stop, snapshot and revert virtainer VMs over HTTP.

Every route but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`, reads included
(VIRTAINER_API_PUBLIC_READS=1 opens the GET routes). The token is checked before the body is read;
bodies over the limit are refused (413) while they stream. Errors always have the shape
`{"error": {"code": ..., "message": ..., "hint": ...}}`. Conflicting operations on one VM are
refused with 409 while another one runs.
"""


def _announce(line: str) -> None:
    sys.stderr.write(f"virtainer api: {line}\n")
    sys.stderr.flush()


def create_app(
    settings: ApiSettings, *, announce: Callable[[str], None] = _announce, on_ready: OnReady | None = None
) -> FastAPI:
    hub = EventHub()
    backend = Backend(settings, hub, on_ready=on_ready)

    engine = _engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.attach(asyncio.get_running_loop())
        watcher = asyncio.create_task(backend.watch_readiness_files())
        if engine is not None:  # the engine's container events, live on /v1/events
            publish = lambda name, action: hub.publish("container", name, action=action)  # noqa: E731
            threading.Thread(target=engine.watch, args=(publish,), name="virtainer-docker-events", daemon=True).start()
        try:
            yield
        finally:
            watcher.cancel()
            backend.close()
            if engine is not None:
                engine.close()

    app = FastAPI(
        title="virtainer",
        version=getattr(virtainer, "__version__", "0"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.state.token = resolve_token(settings, announce)
    app.state.metrics = ApiMetrics(
        VmCollector(backend.hypervisor, settings.vms, settings.metrics_ttl_s), lambda: hub.clients
    )
    app.state.sessions = Sessions()
    app.state.consoles = Consoles(backend.hypervisor, lambda call: backend.run(lambda _hv: call()))
    install_error_handlers(app)
    app.include_router(health.router)
    refusals = responses(401, 408, 413, 503)  # the gate's, before a route runs
    for module in (vms, fleet, snapshots, guest, events, metrics, console):  # the gate checks the token
        app.include_router(module.router, dependencies=[Depends(bearer)], responses=refusals)
    if engine is not None:  # manager mode's routes load only then
        from virtainer.api.routes import containers

        app.state.engine = engine
        app.include_router(containers.router, dependencies=[Depends(bearer)], responses=refusals)
    if settings.ui:
        app.include_router(ui.router)
        app.mount("/ui/static", StaticFiles(directory=ui.UI_DIR, check_dir=False), name="ui-static")
    app.add_middleware(
        Gate,
        token=lambda: app.state.token,
        public_reads=settings.public_reads,
        max_body_bytes=settings.max_body_bytes,
        max_requests=settings.max_requests,
        max_event_streams=settings.max_event_streams,
        body_timeout_s=settings.body_timeout_s,
        sessions=app.state.sessions,
        open_path=lambda path: (settings.ui and ui.is_open(path)) or (path == "/metrics" and not settings.metrics_auth),
    )
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # outermost: refusals are counted too
    return app


def _engine(settings: ApiSettings) -> Engine | None:
    """Manager mode's Docker engine (its SDK loads only then); refused at start when it does not
    answer."""
    if not settings.docker:
        return None
    from virtainer.orchestration.engine import Engine

    return Engine()
