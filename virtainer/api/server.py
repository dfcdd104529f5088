"""Serving the API: the seam for the container controller and for `virtainer serve`.

- `serve(settings)`: a coroutine, for a caller with its own asyncio loop.
- `run_in_thread(settings)`: starts uvicorn on a daemon thread next to the caller's own work
  (the controller's VM supervision) and returns a handle with the URL, the token, the operation
  guard (`handle.guard`, so the controller can tell API-requested power-offs from the guest's
  own) and `stop()`.
- `main(settings)`: blocking, with signal handling (the `virtainer serve` command).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from virtainer.api.app import create_app
from virtainer.api.backend import Backend, OnReady, OperationGuard
from virtainer.api.protocol import ConnectionLimits, protocol_class, raise_open_file_limit
from virtainer.api.settings import ApiSettings
from virtainer.errors import VirtainerError

GRACEFUL_SHUTDOWN_S = 3  # open event streams never end by themselves


def build_server(settings: ApiSettings, app: FastAPI | None = None) -> uvicorn.Server:
    limits = ConnectionLimits(
        raise_open_file_limit(settings.max_connections), settings.header_timeout_s, settings.refuse_local_peers
    )
    config = uvicorn.Config(
        app or create_app(settings),
        host=settings.listen,
        port=settings.port,
        http=protocol_class(limits),  # connection cap and slow-client timeouts (protocol.py)
        access_log=False,  # one line per GET under a 200-client poll costs more than the GET
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    return uvicorn.Server(config)


async def serve(settings: ApiSettings) -> None:
    await build_server(settings).serve()


@dataclass
class ServerHandle:
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets if self.server.servers else []
        return int(sockets[0].getsockname()[1]) if sockets else self.app.state.settings.port

    @property
    def url(self) -> str:
        host = self.app.state.settings.listen
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def token(self) -> str:
        return str(self.app.state.token)

    @property
    def guard(self) -> OperationGuard:
        backend: Backend = self.app.state.backend
        return backend.guard

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def run_in_thread(
    settings: ApiSettings,
    *,
    startup_timeout_s: float = 15.0,
    announce: Callable[[str], None] | None = None,
    on_ready: OnReady | None = None,
    sockets: list[socket.socket] | None = None,
) -> ServerHandle:
    """Start the API on a daemon thread; returns once it accepts connections. sockets: listening
    sockets bound already (the container's lazy API), instead of binding settings.listen:port."""
    app = (
        create_app(settings, announce=announce, on_ready=on_ready)
        if announce
        else create_app(settings, on_ready=on_ready)
    )
    server = build_server(settings, app)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=sockets))
        except BaseException as error:  # noqa: BLE001 - reported to the starting thread
            failure.append(error)

    thread = threading.Thread(target=run, name="virtainer-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if failure or not thread.is_alive():
            raise VirtainerError(f"the API did not start on {settings.listen}:{settings.port}: {failure or 'exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise VirtainerError(f"the API did not start within {startup_timeout_s:.0f} s")
        time.sleep(0.02)
    return ServerHandle(app, server, thread)


def main(settings: ApiSettings) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn handles the signals on the main thread)."""
    server = build_server(settings)
    server.config.log_level = "info"
    server.run()
    return 0
