"""create_app(settings): the FastAPI application. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

import virtainer
from virtainer.api.auth import resolve_token
from virtainer.api.backend import Backend, OnReady
from virtainer.api.errors import install_error_handlers
from virtainer.api.events import EventHub
from virtainer.api.routes import events, fleet, guest, health, snapshots, vms
from virtainer.api.settings import ApiSettings

DESCRIPTION = """Start, stop, snapshot and revert virtainer VMs over HTTP.

Reads are open; every mutating route needs `Authorization: Bearer <token>`. Errors always have
the shape `{"error": {"code": ..., "message": ..., "hint": ...}}`. Conflicting operations on one VM
are refused with 409 while another one runs.
"""


def _announce(line: str) -> None:
    sys.stderr.write(f"virtainer api: {line}\n")
    sys.stderr.flush()


def create_app(
    settings: ApiSettings, *, announce: Callable[[str], None] = _announce, on_ready: OnReady | None = None
) -> FastAPI:
    hub = EventHub()
    backend = Backend(settings, hub, on_ready=on_ready)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.attach(asyncio.get_running_loop())
        watcher = asyncio.create_task(backend.watch_readiness_files())
        try:
            yield
        finally:
            watcher.cancel()
            backend.close()

    app = FastAPI(
        title="virtainer",
        version=getattr(virtainer, "__version__", "0"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.state.token = resolve_token(settings, announce)
    install_error_handlers(app)
    for module in (health, vms, fleet, snapshots, guest, events):
        app.include_router(module.router)
    return app
