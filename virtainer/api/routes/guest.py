"""/v1/vms/{name}/exec, keys, password and guest facts: inside the guest through its agent.

Every route needs the token. A guest without an agent answers 409 with what to use instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from virtainer import guest
from virtainer.api import actions, models
from virtainer.api.deps import BackendDep, VmName
from virtainer.api.errors import responses
from virtainer.errors import ConfigError, VirtainerError
from virtainer.hypervisor import Hypervisor

router = APIRouter(prefix="/v1/vms/{name}", tags=["guest"])  # the token: the gate (gate.py)
ERRORS = responses(401, 404, 409, 422, 500)
GuestUser = Annotated[
    str | None, Query(pattern=guest.USER_NAME.pattern, max_length=33, description="default the VM's user")
]


def _stdin(request: models.ExecRequest) -> bytes | None:
    if request.stdin_b64 is None:
        return None
    try:
        return base64.b64decode(request.stdin_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("stdin_b64", request.stdin_b64[:20], "base64 (RFC 4648)") from None


@router.post(
    "/exec",
    summary="Run a command in the guest and wait for it",
    description="stdout and stderr come back separately, base64 (and as text when UTF-8), with the "
    "exit code (128+N when signal N ended it). For large or long output use `/exec/stream`.",
    responses=ERRORS,
)
async def exec_command(name: VmName, request: models.ExecRequest, backend: BackendDep) -> models.ExecOutput:
    backend.check_visible(name)
    core, stdin = request.core(), _stdin(request)

    def run(hv: Hypervisor) -> models.ExecOutput:
        return models.exec_output_public(guest.run_captured(hv.domain(name), core, stdin))

    return await backend.run(run)


@router.post(
    "/exec/stream",
    summary="Run a command in the guest, its output streamed as it comes",
    description='`application/x-ndjson`: one JSON object a line, `{"stream": "stdout"|"stderr", '
    '"data_b64": ...}` as output arrives, then `{"exit": {exit_code, signal, timed_out, elapsed_s}}` '
    '(or `{"error": {...}}`). Closing the connection kills the command in the guest.',
    responses=ERRORS,
)
async def exec_stream(name: VmName, request: models.ExecRequest, backend: BackendDep) -> StreamingResponse:
    backend.check_visible(name)
    core, stdin = request.core(), _stdin(request)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes] = asyncio.Queue()
    cancel = threading.Event()

    def on_output(stream: guest.Stream, data: bytes) -> None:
        line = json.dumps({"stream": stream, "data_b64": base64.b64encode(data).decode()}) + "\n"
        loop.call_soon_threadsafe(lines.put_nowait, line.encode())

    def run(hv: Hypervisor) -> guest.ExecResult:
        return guest.run(hv.domain(name), core, on_output, stdin=stdin, cancel=cancel)

    task = asyncio.ensure_future(backend.run(run))
    first = await _next_line(lines, task)
    failure = task.exception() if first is None else None
    if failure is not None:
        raise failure  # nothing sent yet: a proper error status (409 without an agent, ...)

    async def body() -> AsyncIterator[bytes]:
        try:
            line = first
            while line is not None:
                yield line
                line = await _next_line(lines, task)
            try:
                result = task.result()
            except VirtainerError as error:
                yield (json.dumps({"error": {"message": error.message, "hint": error.hint}}) + "\n").encode()
                return
            yield f'{{"exit": {models.exec_result_public(result).model_dump_json()}}}\n'.encode()
        finally:
            cancel.set()  # the client went away (or we are done): nothing keeps running in the guest

    return StreamingResponse(body(), media_type="application/x-ndjson")


async def _next_line(lines: asyncio.Queue[bytes], task: asyncio.Future[guest.ExecResult]) -> bytes | None:
    """The next output line, or None once the command is over and every line was taken."""
    if not lines.empty():
        return lines.get_nowait()
    if task.done():
        return None
    getter = asyncio.ensure_future(lines.get())
    waiting: set[asyncio.Future[object]] = {getter, task}  # type: ignore[arg-type]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    return lines.get_nowait() if not lines.empty() else None


@router.get("/guest", summary="What the guest agent reports: OS, kernel, users, filesystems, ...", responses=ERRORS)
async def guest_facts(name: VmName, backend: BackendDep) -> models.GuestFacts:
    backend.check_visible(name)
    return await backend.run(actions.guest_facts, name)


@router.get("/keys", summary="A guest user's SSH authorized keys", responses=ERRORS)
async def list_keys(name: VmName, backend: BackendDep, user: GuestUser = None) -> models.KeysList:
    backend.check_visible(name)
    return await backend.run(actions.list_keys, name, user)


@router.post("/keys", summary="Add SSH authorized keys for a guest user (live)", responses=ERRORS)
async def add_keys(name: VmName, change: models.KeysChange, backend: BackendDep) -> models.KeysList:
    backend.check_visible(name)
    return await backend.run(actions.change_keys, name, change, False)


@router.post("/keys/remove", summary="Remove SSH authorized keys of a guest user (live)", responses=ERRORS)
async def remove_keys(name: VmName, change: models.KeysChange, backend: BackendDep) -> models.KeysList:
    backend.check_visible(name)
    return await backend.run(actions.change_keys, name, change, True)


@router.post(
    "/password",
    summary="Set a guest user's password (random unless given; returned once)",
    responses=ERRORS,
)
async def set_password(
    name: VmName, backend: BackendDep, request: models.PasswordRequest | None = None
) -> models.PasswordResult:
    backend.check_visible(name)
    return await backend.run(actions.set_password, name, request or models.PasswordRequest(user=None, password=None))
