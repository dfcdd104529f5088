"""The guest's serial console and screen: a console byte stream, screenshots, the VNC endpoint."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from virtainer.domain_model import parse_domain
from virtainer.errors import HypervisorError
from virtainer.hypervisor.base import DomainBase
from virtainer.hypervisor.translate import no_raw_libvirt_errors


@dataclass(frozen=True)
class VncEndpoint:
    """Where a running domain's VNC display listens: a unix socket, or a host and port."""

    socket: str | None = None
    host: str | None = None
    port: int | None = None


# libvirt's event loop: needed for non-blocking console streams. Started once per process.
_event_loop_lock = threading.Lock()
_event_loop_started = False


def ensure_event_loop() -> None:
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


@no_raw_libvirt_errors
class Console(DomainBase):
    @contextlib.contextmanager
    def console(self, *, force: bool = True) -> Iterator[ConsoleStream]:
        """The guest's serial console as a byte stream (what `virsh console` attaches to)."""
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
        try:
            stream = self._conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            self._domain.openConsole(None, stream, flags)
            console = ConsoleStream(stream)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot open the console of '{self.name}': {error.get_error_message()}") from None
        try:
            yield console
        finally:
            console.close()

    def screenshot(self, path: Path) -> str:
        """Save the guest's screen (its first display adapter) to `path`; returns the MIME type.

        QEMU sends PNG (or PPM when it is older than 7.1), whatever the file is called.
        """
        stream = self._conn.newStream(0)
        try:
            mime = str(self._domain.screenshot(stream, 0, 0))
            data = bytearray()
            while chunk := stream.recv(262144):
                if not isinstance(chunk, bytes):
                    raise HypervisorError(f"screenshot of '{self.name}': the stream would block")
                data.extend(chunk)
            stream.finish()
        except libvirt.libvirtError as error:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise HypervisorError(f"cannot take a screenshot of '{self.name}': {error.get_error_message()}") from None
        path.write_bytes(bytes(data))
        return mime

    def has_display(self) -> bool:
        """The domain has a display adapter (a video device)."""
        return parse_domain(str(self._domain.XMLDesc(0))).video is not None

    def vnc_endpoint(self) -> VncEndpoint | None:
        """The running domain's VNC display from its live XML; None without one (or while off)."""
        vnc = parse_domain(str(self._domain.XMLDesc(0))).vnc
        if vnc is None:
            return None
        if vnc.socket:
            return VncEndpoint(socket=vnc.socket)
        if vnc.port <= 0:
            return None
        host = vnc.listen or "127.0.0.1"
        return VncEndpoint(host="127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port=vnc.port)


@no_raw_libvirt_errors
class ConsoleStream:
    """Non-blocking libvirt stream with a condition variable: read with a deadline, write any time."""

    def __init__(self, stream: libvirt.virStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._closed = False
        self._ready = threading.Condition()
        events = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP
        stream.eventAddCallback(events, self._on_event, None)

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        with self._ready:
            if events & libvirt.VIR_STREAM_EVENT_READABLE:
                try:
                    data = stream.recv(65536)
                except libvirt.libvirtError:
                    data = b""
                if isinstance(data, bytes) and data:
                    self._buffer.extend(data)
                elif data == b"":
                    self._closed = True
            if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
                self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, timeout_s: float) -> bytes:
        """Whatever arrived, waiting up to timeout_s for something; b'' on timeout or close."""
        with self._ready:
            self._ready.wait_for(lambda: self._buffer or self._closed, timeout=timeout_s)
            data = bytes(self._buffer)
            self._buffer.clear()
            return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self._stream.send(bytes(view))
            except libvirt.libvirtError as error:
                raise HypervisorError(f"console write failed: {error.get_error_message()}") from None
            if sent == -2:  # would block: let the guest drain
                with self._ready:
                    self._ready.wait(0.05)
                continue
            view = view[sent:]

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.finish()
        self._closed = True
