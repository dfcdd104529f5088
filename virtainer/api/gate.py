"""The gate: what every HTTP request passes before FastAPI sees it (pure ASGI, no body parsing).

In this order, each refusal answered at once in the API's error shape, with `Connection: close`
(the server then stops reading what the client still sends):

1. `/healthz` and `/readyz` pass: health checks carry no token and are never limited here.
2. Credentials (auth.check_credentials) from the headers alone: 401 before a byte of the body is
   read. With `public_reads`, GET and HEAD pass without them; so do the paths `open_path` names
   (the web UI's page, login and assets; /metrics when told). A web UI session cookie from this
   server's origin (session.py) counts as credentials, for websockets too.
3. A declared Content-Length above `max_body_bytes`: 413.
4. More than `max_requests` requests in progress: 503; more than `max_event_streams` open event
   streams: 429.
5. The body is read here, counted while it streams (413 past the cap) and within
   `body_timeout_s` (408); the application then gets it from memory.

Limits below HTTP (open connections, slow request headers) are protocol.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from virtainer.api.auth import check_credentials
from virtainer.api.errors import error_bytes
from virtainer.api.session import Sessions, cookie_authorized
from virtainer.errors import AuthError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
EVENTS_PATH = "/v1/events"
READ_METHODS = frozenset({"GET", "HEAD"})


class Refusal(Exception):
    """A request answered by the gate itself."""

    def __init__(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint


class Gate:
    def __init__(
        self,
        app: App,
        *,
        token: Callable[[], str],
        public_reads: bool,
        max_body_bytes: int,
        max_requests: int,
        max_event_streams: int,
        body_timeout_s: float,
        sessions: Sessions | None = None,
        open_path: Callable[[str], bool] = lambda _path: False,
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.open_path = open_path
        self.token = token
        self.public_reads = public_reads
        self.max_body_bytes = max_body_bytes
        self.max_requests = max_requests
        self.max_event_streams = max_event_streams
        self.body_timeout_s = body_timeout_s
        self.requests = 0  # in progress, health excepted (one event loop: no lock needed)
        self.event_streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the console and the screen: no way around the token
            try:
                check_credentials(dict(scope["headers"]), self.token(), session=cookie_authorized(scope, self.sessions))
            except AuthError:
                await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
                return
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        streaming = scope["path"] == EVENTS_PATH
        try:
            headers = dict(scope["headers"])
            self._admit(scope, headers)
            if self.requests >= self.max_requests:
                raise Refusal(503, "busy", f"more than {self.max_requests} requests in progress", "retry shortly")
            if streaming and self.event_streams >= self.max_event_streams:
                raise Refusal(
                    429, "too_many_streams", f"{self.max_event_streams} event streams are open already",
                    "close another /v1/events stream first",
                )  # fmt: skip
        except Refusal as refusal:
            await _refuse(send, refusal)
            return
        self.requests += 1
        self.event_streams += streaming
        try:
            await self._forward(scope, receive, send, headers)
        finally:
            self.requests -= 1
            self.event_streams -= streaming

    def _admit(self, scope: Scope, headers: dict[bytes, bytes]) -> None:
        if not (self.public_reads and scope["method"] in READ_METHODS) and not self.open_path(scope["path"]):
            try:
                check_credentials(headers, self.token(), session=cookie_authorized(scope, self.sessions))
            except AuthError as error:
                raise Refusal(401, "unauthorized", error.message, error.hint) from None
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            raise Refusal(422, "invalid_input", "Content-Length is not a number")
        if int(declared) > self.max_body_bytes:
            raise Refusal(413, "body_too_large", f"the body is larger than {self.max_body_bytes} bytes")

    async def _forward(self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]) -> None:
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_timeout_s)
        except Refusal as refusal:
            await _refuse(send, refusal)
            return
        except TimeoutError:
            await _refuse(send, Refusal(408, "timeout", f"the body did not arrive within {self.body_timeout_s:g} s"))
            return
        if body is None:
            return  # the client went away
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the disconnect, for streaming responses

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise Refusal(413, "body_too_large", f"the body is larger than {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _refuse(send: Send, refusal: Refusal) -> None:
    body = error_bytes(refusal.code, refusal.message, refusal.hint)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # what the client still sends is never read
    ]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="virtainer"'))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
