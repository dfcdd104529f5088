"""The serial console over websockets: one libvirt console stream per VM, shared by every viewer.

Every viewer sees the guest's output (and, on joining, the last few KiB of it); one viewer types
at a time: the first one, until another takes over (like `virsh console --force`). The stream is
read on a thread of its own and closed when the last viewer leaves.

Websocket protocol: binary frames are terminal bytes, both ways (input only counts from the
typist). Text frames are JSON: from the browser `{"type": "take"}` and
`{"type": "resize", "cols": C, "rows": R}` (a serial line carries no window size: the page fits
the terminal to the window, and `resize` typed in the guest asks xterm.js for it); to it
`{"type": "role", "typing": bool, "viewers": n}` and `{"type": "closed", "reason": ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from virtainer.errors import VirtainerError
from virtainer.hypervisor import ConsoleStream, Hypervisor

BACKLOG_BYTES = 16384
QUEUE_FRAMES = 512  # a viewer this far behind loses its oldest output, not everyone's speed
log = logging.getLogger("virtainer.api")


@dataclass(eq=False)
class Viewer:
    socket: WebSocket
    queue: asyncio.Queue[bytes | str] = field(default_factory=lambda: asyncio.Queue(QUEUE_FRAMES))

    def put(self, frame: bytes | str) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(frame)


class ConsoleHub:
    """The viewers of one VM's console; every method but the reader runs on the event loop."""

    def __init__(self, vm: str, loop: asyncio.AbstractEventLoop, on_empty: Callable[[ConsoleHub], None]) -> None:
        self.vm = vm
        self._loop = loop
        self._on_empty = on_empty
        self.viewers: list[Viewer] = []
        self.typist: Viewer | None = None
        self._backlog = bytearray()
        self._stream: ConsoleStream | None = None
        self._stop = threading.Event()
        self._opened = asyncio.Event()
        self._failure: str | None = None
        self.alive = True  # False once the stream ended: the next viewer opens a new one

    def start(self, hypervisor: Callable[[], Hypervisor]) -> None:
        threading.Thread(target=self._read, args=(hypervisor,), name=f"console-{self.vm}", daemon=True).start()

    async def opened(self) -> str | None:
        """Wait for the stream; returns why it could not open, or None."""
        await self._opened.wait()
        return self._failure

    def _read(self, hypervisor: Callable[[], Hypervisor]) -> None:
        try:
            with hypervisor().console(self.vm, force=True) as stream:
                self._stream = stream
                self._loop.call_soon_threadsafe(self._opened.set)
                while not self._stop.is_set() and not stream.closed:
                    data = stream.read(0.25)
                    if data:
                        self._loop.call_soon_threadsafe(self._output, data)
            reason = "the console closed (the VM stopped, or another console took it)"
        except VirtainerError as error:
            reason = error.message
            self._failure = reason
        self._stream = None
        self.alive = False
        self._loop.call_soon_threadsafe(self._opened.set)
        if not self._stop.is_set():
            self._loop.call_soon_threadsafe(self._closed, reason)

    def _output(self, data: bytes) -> None:
        self._backlog.extend(data)
        del self._backlog[:-BACKLOG_BYTES]
        for viewer in self.viewers:
            viewer.put(data)

    def _closed(self, reason: str) -> None:
        for viewer in self.viewers:
            viewer.put(json.dumps({"type": "closed", "reason": reason}))

    def join(self, viewer: Viewer) -> None:
        self.viewers.append(viewer)
        if self._backlog:
            viewer.put(bytes(self._backlog))
        if self.typist is None:
            self.typist = viewer
        self._announce()

    def leave(self, viewer: Viewer) -> None:
        self.viewers.remove(viewer)
        if self.typist is viewer:
            self.typist = self.viewers[0] if self.viewers else None
        if not self.viewers:
            self._stop.set()
            self._on_empty(self)
        else:
            self._announce()

    def take(self, viewer: Viewer) -> None:
        self.typist = viewer
        self._announce()

    def _announce(self) -> None:
        for viewer in self.viewers:
            role = {"type": "role", "typing": viewer is self.typist, "viewers": len(self.viewers)}
            viewer.put(json.dumps(role))

    def write(self, data: bytes) -> None:
        """Called on a worker thread: the stream's write may wait for the guest to drain."""
        stream = self._stream
        if stream is not None:
            stream.write(data)


class Consoles:
    """One hub per VM with viewers."""

    def __init__(
        self, hypervisor: Callable[[], Hypervisor], run: Callable[[Callable[[], None]], Awaitable[None]]
    ) -> None:
        self._hypervisor = hypervisor
        self._run = run  # on the backend's thread pool: writes may wait for the guest
        self._hubs: dict[str, ConsoleHub] = {}

    async def serve(self, vm: str, socket: WebSocket) -> None:
        """Bridge one accepted websocket until either side closes."""
        hub = self._hubs.get(vm)
        if hub is None or not hub.alive:
            hub = ConsoleHub(vm, asyncio.get_running_loop(), self._forget)
            self._hubs[vm] = hub
            hub.start(self._hypervisor)
        failure = await hub.opened()
        if failure is not None:
            self._forget(hub)
            await socket.send_text(json.dumps({"type": "closed", "reason": failure}))
            await socket.close(code=1011)
            return
        viewer = Viewer(socket)
        hub.join(viewer)
        sender = asyncio.create_task(_send_frames(viewer))
        try:
            await self._receive(hub, viewer)
        finally:
            sender.cancel()
            hub.leave(viewer)

    async def _receive(self, hub: ConsoleHub, viewer: Viewer) -> None:
        while True:
            message = await viewer.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                if viewer is hub.typist:
                    await self._run(functools.partial(hub.write, message["bytes"]))
            elif message.get("text") is not None:
                _control(hub, viewer, message["text"])

    def _forget(self, hub: ConsoleHub) -> None:
        if self._hubs.get(hub.vm) is hub:
            del self._hubs[hub.vm]


def _control(hub: ConsoleHub, viewer: Viewer, text: str) -> None:
    """Anything but a take-over is ignored (resize included: see the module's docstring)."""
    with contextlib.suppress(ValueError, AttributeError):
        if json.loads(text).get("type") == "take":
            hub.take(viewer)


async def _send_frames(viewer: Viewer) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            frame = await viewer.queue.get()
            if isinstance(frame, bytes):
                await viewer.socket.send_bytes(frame)
            else:
                await viewer.socket.send_text(frame)
