"""The pure logic under the API's limits, without a server: the gate never calls receive() for a
refused request, the operation guard's drain (docker stop during a revert), local peers. The real
server is tested in tests/api/test_gate.py and test_limits.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from virtainer.api.backend import OperationGuard
from virtainer.api.gate import Gate
from virtainer.api.protocol import is_local_peer
from virtainer.errors import ConflictError

TOKEN = "unit-token-0123456789"


def gate(**limits: Any) -> tuple[Gate, list[str]]:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["path"])
        message = await receive()
        body = message.get("body", b"")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    settings = {"public_reads": False, "max_body_bytes": 1024, "max_requests": 2, "max_event_streams": 1,
                "body_timeout_s": 0.2, **limits}  # fmt: skip
    return Gate(app, token=lambda: TOKEN, **settings), called


def call(gate: Gate, method: str, path: str, headers: dict[str, str], chunks: list[bytes] | None = None,
         stall: bool = False) -> tuple[int, bytes, int]:  # fmt: skip
    """Status, body, and how many times the request's body was asked for."""
    sent: list[dict[str, Any]] = []
    asked = 0
    pending = list(chunks or [b""])

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        if stall:
            await asyncio.sleep(10)
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}  # fmt: skip
    asyncio.run(gate(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, asked


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_refused_request_never_reads_its_body() -> None:
    checked, called = gate()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, body, asked = call(checked, "POST", "/v1/vms/vm/start", {**headers, "Content-Length": "999999"})
        assert (status, asked) == (401, 0) and b'"unauthorized"' in body
    status, body, asked = call(checked, "POST", "/v1/vms/vm/start", {**AUTH, "Content-Length": "999999"})
    assert (status, asked) == (413, 0) and b'"body_too_large"' in body
    assert called == []


def test_bodies_are_counted_while_they_stream_and_timed() -> None:
    checked, called = gate()
    status, _, asked = call(checked, "POST", "/v1/vms/vm/start", AUTH, [b"x" * 600, b"x" * 600, b"x" * 600])
    assert (status, asked) == (413, 2) and called == []  # stopped at the chunk that crossed the cap
    status, body, _ = call(checked, "POST", "/v1/vms/vm/start", AUTH, stall=True)
    assert status == 408 and b"did not arrive" in body
    status, body, _ = call(checked, "POST", "/v1/vms/vm/start", AUTH, [b"{}"])
    assert (status, body) == (200, b"{}") and called == ["/v1/vms/vm/start"]  # replayed to the app


def test_health_passes_and_public_reads_open_only_reads() -> None:
    checked, _ = gate()
    assert call(checked, "GET", "/healthz", {})[0] == 200
    assert call(checked, "GET", "/v1/vms", {})[0] == 401
    public, _ = gate(public_reads=True)
    assert call(public, "GET", "/v1/vms", {})[0] == 200
    assert call(public, "POST", "/v1/vms/vm/start", {})[0] == 401


def test_operations_in_progress_are_waited_for_and_no_new_one_starts() -> None:
    guard = OperationGuard()
    entered, release = threading.Event(), threading.Event()

    def revert() -> None:
        with guard.hold("vm", "revert"):
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=revert)
    worker.start()
    entered.wait(5)
    assert guard.drain(0.1) == ["revert of vm"]  # still running at the deadline
    with pytest.raises(ConflictError, match="stopping"), guard.hold("other", "snapshot"):
        pass
    threading.Timer(0.2, release.set).start()
    started = time.monotonic()
    assert guard.drain(5) == []
    assert time.monotonic() - started < 4  # returned when the revert ended, not at the deadline
    worker.join(5)


def test_local_peers() -> None:
    assert is_local_peer(("127.0.0.1", 5), ("172.17.0.2", 8470))
    assert is_local_peer(("::1", 5), ("::1", 8470))
    assert is_local_peer(("172.17.0.2", 5), ("172.17.0.2", 8470))  # QEMU, to the container's own address
    assert not is_local_peer(("172.17.0.1", 5), ("172.17.0.2", 8470))  # the host, docker-proxy
    assert not is_local_peer(None, ("172.17.0.2", 8470))
