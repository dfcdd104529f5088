"""Limits below HTTP: uvicorn's HTTP protocol with a cap on open connections and on how long and
how large a request's head may be. Each refusal is answered in the API's error shape, and the
connection closed:

- more than `max_connections` open: 503 at once (the file-descriptor limit is raised to fit them);
- a request line and headers not complete within `header_timeout_s` of the connection opening
  (or of the previous response on a kept-alive connection): 408 (a slow client);
- a head larger than MAX_HEAD_BYTES: 431;
- with `refuse_local_peers` (the container under QEMU's user-mode networking, where the guest's
  connections to 10.0.2.2 or to the container's address are made by QEMU, from this host): every
  connection from this host, 403. Clients elsewhere are served as always.

Idle connections cost a few KiB each and no thread; /healthz keeps answering under 10k of them
(tests/api/test_limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import resource
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from virtainer.api.errors import error_bytes

MAX_HEAD_BYTES = 64 << 10
LOCAL_PEERS_REFUSED = (
    "connections from inside the container are refused under user-mode networking (the guest's own arrive as such)"
)
SPARE_FILES = 256  # descriptors beyond the connections: libvirt, logs, the state directory


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    refuse_local_peers: bool = False  # user-mode networking: the guest's connections arrive as local


def is_local_peer(client: tuple[str, int] | None, server: tuple[str, int | None] | None) -> bool:
    """A connection from this host itself: from loopback, or from the address it arrived at."""
    if client is None:
        return False
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(client[0]).is_loopback:
            return True
    return server is not None and client[0] == server[0]


def protocol_class(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class uvicorn instantiates per connection, bound to these limits."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


def raise_open_file_limit(connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE so that `connections` fit; returns how many fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return connections if soft == resource.RLIM_INFINITY else max(1, min(connections, soft - SPARE_FILES))


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = False
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "busy", f"more than {self.limits.max_connections} connections are open", "retry shortly")
            return
        if self.limits.refuse_local_peers and is_local_peer(self.client, self.server):
            self._refuse(403, "forbidden", LOCAL_PEERS_REFUSED)
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(431, "head_too_large", f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete  # no pipelined request parsed yet
        if idle and not self.transport.is_closing():
            self._await_head()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._awaiting_head, self._head_bytes = True, 0
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            timeout = self.limits.header_timeout_s
            self._refuse(408, "timeout", f"the request's headers did not arrive within {timeout:g} s")

    def _refuse(self, status: int, code: str, message: str, hint: str | None = None) -> None:
        self._awaiting_head = False
        self._stop_head_timer()
        body = error_bytes(code, message, hint)
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
