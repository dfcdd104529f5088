"""Lifecycle, readiness and operation events, fanned out to server-sent-event subscribers.

Producers run on other threads (libvirt's event loop, the thread pool): `publish` hands each
event to the asyncio loop, which copies it into every subscriber's bounded queue. A slow
subscriber loses its oldest events rather than slowing anyone else down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

QUEUE_SIZE = 256
KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class Event:
    id: int
    type: str  # lifecycle, readiness, operation
    vm: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)

    def sse(self) -> str:
        payload = {"type": self.type, "vm": self.vm, "at": self.at, **self.data}
        return f"id: {self.id}\nevent: {self.type}\ndata: {json.dumps(payload)}\n\n"


class EventHub:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._ids = itertools.count(1)

    @property
    def clients(self) -> int:
        """Open streams (a metric)."""
        return len(self._subscribers)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, type_: str, vm: str, **data: Any) -> None:
        """Thread-safe; a no-op before the server's loop runs or after it closed."""
        event = Event(next(self._ids), type_, vm, time.time(), data)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._fan_out, event)

    def _fan_out(self, event: Event) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def stream(self, vm: str | None = None) -> AsyncIterator[str]:
        """SSE text: events (of one VM, if given), with a keep-alive comment when idle."""
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield ": connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if vm is None or event.vm == vm:
                    yield event.sse()
        finally:
            self._subscribers.discard(queue)
