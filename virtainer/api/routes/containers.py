"""Manager mode (`virtainer serve --docker`): the engine's virtainer containers.

- `GET /v1/containers`, `GET /v1/containers/images`: what exists, what to create from;
- `POST /v1/containers`: a new VM container (its diff on a named volume);
- `POST /v1/containers/{name}/start|stop`, `DELETE /v1/containers/{name}[?volume=true]`: the
  volume is kept unless asked;
- `/v1/containers/{name}/api/v1/...`: that container's own REST API, HTTP and websockets (its
  console and screen), called with its token. The browser never sees a container's token: it
  holds the manager's session only.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Query, Request, Response, WebSocket, status
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from virtainer.api.errors import responses
from virtainer.api.models import Model
from virtainer.api.routes.console import until_either_ends
from virtainer.errors import NotFoundError, VirtainerError
from virtainer.orchestration.engine import NAME_RE, Engine, NewContainer

router = APIRouter(prefix="/v1/containers", tags=["containers (manager mode)"])
ContainerName = Annotated[str, Path(pattern=NAME_RE.pattern, max_length=63, description="container name")]
PROXIED = re.compile(r"v1/[A-Za-z0-9_.~%/-]*")  # a container's own API routes, nothing else
PROXY_TIMEOUT_S = 180.0  # a stop waits for the guest (up to its timeout)
POLICY_VIOLATION = 1008


class ContainerInfo(Model):
    name: str
    id: str
    image: str
    variant: str
    state: str
    health: str
    volume: str
    ports: list[str]
    api: bool
    created: str


class NewContainerBody(Model):
    name: str = Field(max_length=63)
    image: str = Field(max_length=300)
    memory_mib: int = Field(1024, ge=64, le=1 << 20)
    cpus: int = Field(2, ge=1, le=256)
    ssh_key: str = Field("", max_length=16384)
    volume: str = Field("", max_length=63)
    ports: str = Field("", max_length=2000)
    env: str = Field("", max_length=16384)
    network: bool = True
    kvm: bool = False


STOP_TIMEOUT_S = 70  # the guest's 60 s (VIRTAINER_STOP_TIMEOUT's default), and the controller's exit


class StopBody(Model):
    timeout_s: int = Field(STOP_TIMEOUT_S, ge=1, le=3600)


class Removed(Model):
    volume_kept: str | None


def engine(connection: Request | WebSocket) -> Engine:
    found: Engine = connection.app.state.engine
    return found


def _info(container: Any) -> ContainerInfo:
    return ContainerInfo.model_validate({**asdict(container), "ports": list(container.ports)})


@router.get("", summary="The engine's virtainer containers")
async def list_containers(request: Request) -> list[ContainerInfo]:
    return [_info(c) for c in await run_in_threadpool(engine(request).containers)]


@router.get("/images", summary="The engine's virtainer images (tags), newest first")
async def list_images(request: Request) -> list[str]:
    return await run_in_threadpool(engine(request).images)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create and start a VM container",
             responses=responses(404, 409, 422))  # fmt: skip
async def create(body: NewContainerBody, request: Request) -> ContainerInfo:
    created = await run_in_threadpool(engine(request).create, NewContainer(**body.model_dump()))
    return _info(created)


@router.post("/{name}/start", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404))
async def start(name: ContainerName, request: Request) -> Response:
    await run_in_threadpool(engine(request).start, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/stop", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404),
             summary="docker stop: the guest shuts down, then the container ends")  # fmt: skip
async def stop(name: ContainerName, request: Request, body: StopBody | None = None) -> Response:
    await run_in_threadpool(engine(request).stop, name, body.timeout_s if body else STOP_TIMEOUT_S)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{name}", responses=responses(404, 409), summary="Remove a stopped container (its volume kept)")
async def remove(name: ContainerName, request: Request, volume: bool = Query(False)) -> Removed:
    kept = await run_in_threadpool(lambda: engine(request).remove(name, volume=volume))
    return Removed(volume_kept=kept)


# -- the containers' own APIs --------------------------------------------------------------------


async def _endpoint(connection: Request | WebSocket, name: str) -> tuple[str, str]:
    return await run_in_threadpool(engine(connection).endpoint, name)


@router.api_route("/{name}/api/{path:path}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
async def proxy(name: ContainerName, path: str, request: Request) -> Response:
    if not PROXIED.fullmatch(path) or ".." in path or path.startswith("v1/events"):
        raise NotFoundError(f"no route {path} in a container's API through the manager")
    url, token = await _endpoint(request, name)
    headers = {"Authorization": f"Bearer {token}"}
    if request.headers.get("content-type"):
        headers["Content-Type"] = request.headers["content-type"]
    try:
        async with httpx.AsyncClient(timeout=PROXY_TIMEOUT_S) as client:
            answer = await client.request(
                request.method, f"{url}/{path}", params=request.query_params, content=await request.body(),
                headers=headers,
            )  # fmt: skip
    except httpx.HTTPError as error:
        raise VirtainerError(f"{name}'s API does not answer: {type(error).__name__}") from None
    kept = {key: value for key, value in answer.headers.items() if key.lower() in ("content-type", "retry-after")}
    return Response(answer.content, status_code=answer.status_code, headers=kept)


@router.websocket("/{name}/api/v1/vms/{vm}/{channel}")
async def proxy_socket(socket: WebSocket, name: str, vm: str, channel: str) -> None:
    """The console or the screen of a container's VM: bytes and text both ways."""
    from websockets.asyncio.client import connect  # only when a console opens

    if not NAME_RE.fullmatch(name) or not NAME_RE.fullmatch(vm) or channel not in ("console", "vnc"):
        await socket.close(code=POLICY_VIOLATION)
        return
    try:
        url, token = await _endpoint(socket, name)
        upstream = await connect(
            f"ws{url.removeprefix('http')}/v1/vms/{vm}/{channel}",
            additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, open_timeout=15,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - any refusal: the engine's, the API's, the network's
        reason = error.message if isinstance(error, VirtainerError) else "the container's VM refused it"
        await socket.close(code=POLICY_VIOLATION, reason=reason[:120])
        return
    await socket.accept()
    try:
        await _pump(socket, upstream)
    finally:
        await upstream.close()


async def _pump(socket: WebSocket, upstream: Any) -> None:
    async def to_browser() -> None:
        async for message in upstream:
            if isinstance(message, bytes):
                await socket.send_bytes(message)
            else:
                await socket.send_text(message)

    async def to_container() -> None:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    await until_either_ends(socket, to_browser(), to_container())
