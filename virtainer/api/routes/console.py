"""The VM's serial console and screen as websockets, for the web UI (and any other client):

- `/v1/vms/{name}/console`: the serial console (virtainer/api/console.py);
- `/v1/vms/{name}/vnc`: the VNC display's RFB bytes, proxied from libvirt's VNC listener (a unix
  socket libvirt made, or the published port), so noVNC works without exposing anything else;
- `GET /v1/vms/{name}/display`: whether the VM has a display adapter and a VNC display.

Websockets pass the gate like every request (a bearer token, or the UI's session cookie from
this server's own origin): a refused handshake is answered 403 before anything is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from virtainer.api.backend import Backend
from virtainer.api.console import Consoles
from virtainer.api.deps import BackendDep, VmName
from virtainer.api.errors import responses
from virtainer.api.models import Model
from virtainer.errors import NotFoundError, VirtainerError
from virtainer.hypervisor import Hypervisor, VncEndpoint

router = APIRouter(tags=["console"])
POLICY_VIOLATION = 1008  # before accept: the handshake is answered 403
NO_DISPLAY = 4404
CHUNK = 65536


class Display(Model):
    adapter: bool
    vnc: bool


@router.get(
    "/v1/vms/{name}/display",
    summary="Whether the VM has a display adapter, and a VNC display the API can reach",
    responses=responses(404, 422),
)
async def display(name: VmName, backend: BackendDep) -> Display:
    backend.check_visible(name)
    adapter, endpoint = await backend.run(_display, name)
    return Display(adapter=adapter, vnc=endpoint is not None)


def _display(hv: Hypervisor, name: str) -> tuple[bool, VncEndpoint | None]:
    return hv.has_display(name), hv.vnc_endpoint(name)


async def _visible(socket: WebSocket, name: str) -> Backend | None:
    backend: Backend = socket.app.state.backend
    try:
        backend.check_visible(name)
    except NotFoundError:
        await socket.close(code=POLICY_VIOLATION)
        return None
    return backend


@router.websocket("/v1/vms/{name}/console")
async def console(socket: WebSocket, name: VmName) -> None:
    if await _visible(socket, name) is None:
        return
    await socket.accept()
    consoles: Consoles = socket.app.state.consoles
    await consoles.serve(name, socket)


@router.websocket("/v1/vms/{name}/vnc")
async def vnc(socket: WebSocket, name: VmName) -> None:
    backend = await _visible(socket, name)
    if backend is None:
        return
    try:
        endpoint = await backend.run(lambda hv: hv.vnc_endpoint(name))
    except VirtainerError:
        endpoint = None
    if endpoint is None:
        await socket.close(code=POLICY_VIOLATION, reason="this VM has no VNC display (no display adapter, or off)")
        return
    try:
        if endpoint.socket:
            reader, writer = await asyncio.open_unix_connection(endpoint.socket)
        else:
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    except OSError:
        await socket.close(code=POLICY_VIOLATION, reason="the VM's VNC display does not answer")
        return
    await socket.accept()
    try:
        await _pump(socket, reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _pump(socket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """RFB bytes both ways until either side closes."""

    async def to_browser() -> None:
        while data := await reader.read(CHUNK):
            await socket.send_bytes(data)

    async def to_vnc() -> None:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                writer.write(message["bytes"])
                await writer.drain()

    await until_either_ends(socket, to_browser(), to_vnc())


async def until_either_ends(socket: WebSocket, *directions: Coroutine[Any, Any, None]) -> None:
    """Run the directions of a proxied websocket until one ends; then stop the others and close
    the browser's side."""
    tasks = [asyncio.create_task(direction) for direction in directions]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the browser may be gone already
            await socket.close()
