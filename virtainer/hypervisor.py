"""libvirt, and only here: every libvirt call and libvirt error of virtainer goes through this module.

libvirt errors become virtainer errors with meaning (`VIR_ERR_NO_DOMAIN` -> NotFoundError,
`VIR_ERR_OPERATION_INVALID` on stop -> already off), raised `from None` so users see one line.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import libvirt
import libvirt_qemu
from lxml import etree

from virtainer.domain import METADATA_NS
from virtainer.errors import ConflictError, HypervisorError, NotFoundError

DEFAULT_URI = "qemu:///system"


class DomainState(str, Enum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    SHUT_OFF = "shut-off"
    CRASHED = "crashed"
    SUSPENDED = "suspended"
    OTHER = "other"
    UNDEFINED = "undefined"


_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.SUSPENDED,
}


@dataclass(frozen=True)
class InterfaceAddress:
    mac: str
    address: str
    prefix: int
    source: str  # lease, agent or arp


# libvirt's event loop: needed for non-blocking console streams. Started once per process.
_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ensure_event_loop() -> None:
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


def _ignore_libvirt_console_noise(_ctx: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


class Hypervisor:
    """A connection to libvirt. Domain-level operations take the domain name."""

    def __init__(self, uri: str = DEFAULT_URI) -> None:
        _ensure_event_loop()
        libvirt.registerErrorHandler(_ignore_libvirt_console_noise, None)
        self.uri = uri
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as error:
            raise HypervisorError(
                f"cannot connect to libvirt at {uri}: {error.get_error_message()}",
                hint="is libvirtd running? (scripts/setup-host.sh starts it)",
            ) from None

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- host ----------------------------------------------------------------------------------

    def offers_kvm(self) -> bool:
        try:
            self.conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
        except libvirt.libvirtError:
            return False
        return True

    def ensure_network_active(self, name: str) -> None:
        """Start a libvirt network (like `default`) if it is defined but inactive."""
        try:
            network = self.conn.networkLookupByName(name)
        except libvirt.libvirtError:
            raise NotFoundError(
                f"libvirt network '{name}' does not exist",
                hint="use network=user or none, or define the network",
            ) from None
        if not network.isActive():
            try:
                network.create()
            except libvirt.libvirtError as error:
                raise HypervisorError(f"cannot start network '{name}': {error.get_error_message()}") from None

    def list_names(self) -> list[str]:
        return sorted(domain.name() for domain in self.conn.listAllDomains(0))

    # -- domains -------------------------------------------------------------------------------

    def _domain(self, name: str) -> libvirt.virDomain:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFoundError(f"no VM named '{name}'") from None
            raise HypervisorError(error.get_error_message()) from None

    def exists(self, name: str) -> bool:
        try:
            self._domain(name)
        except NotFoundError:
            return False
        return True

    def define(self, xml: str) -> None:
        """Define or redefine; a redefinition keeps the domain's UUID (libvirt requires it)."""
        if self.exists(name := _xml_name(xml)):
            xml = _with_uuid(xml, self._domain(name).UUIDString())
        try:
            self.conn.defineXML(xml)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"libvirt refused the domain: {error.get_error_message()}") from None

    def start(self, name: str) -> None:
        domain = self._domain(name)
        if domain.isActive():
            return
        try:
            domain.create()
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot start '{name}': {error.get_error_message()}") from None

    def state(self, name: str) -> DomainState:
        try:
            domain = self._domain(name)
        except NotFoundError:
            return DomainState.UNDEFINED
        code, _reason = domain.state()
        return _STATES.get(code, DomainState.OTHER)

    def xml(self, name: str, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return str(self._domain(name).XMLDesc(flags))

    def metadata(self, name: str) -> dict[str, str]:
        """virtainer's own record inside the domain XML (see metadata.xml.j2)."""
        try:
            text = self._domain(name).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        except libvirt.libvirtError:
            return {}
        root = etree.fromstring(text.encode())
        values = {etree.QName(child).localname: (child.text or "") for child in root}
        accelerator = root.find(f"{{{METADATA_NS}}}accelerator")
        if accelerator is not None:
            values["accelerator-reason"] = accelerator.get("reason", "")
        return values

    def info(self, name: str) -> tuple[int, int]:
        """(vCPUs, memory MiB) as libvirt has them."""
        _state, max_kib, _kib, vcpus, _time = self._domain(name).info()
        return vcpus, max_kib // 1024

    def request_shutdown(self, name: str, *, agent: bool) -> bool:
        """Ask the guest to power off (agent or ACPI). False when that channel refused."""
        flag = libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT if agent else libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
        try:
            self._domain(name).shutdownFlags(flag)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                return True  # already off
            return False
        return True

    def destroy(self, name: str) -> bool:
        """Power off at once. False when it was not running."""
        try:
            self._domain(name).destroy()
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                return False
            raise HypervisorError(f"cannot destroy '{name}': {error.get_error_message()}") from None
        return True

    def undefine(self, name: str) -> None:
        """Forget the domain; disks, diff and NVRAM files are kept."""
        domain = self._domain(name)
        if domain.isActive():
            raise ConflictError(f"VM '{name}' is running; stop it before undefining it")
        flags = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        try:
            domain.undefineFlags(flags)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot undefine '{name}': {error.get_error_message()}") from None

    # -- guest facts ---------------------------------------------------------------------------

    def addresses(self, name: str) -> list[InterfaceAddress]:
        """IPv4 addresses from DHCP leases, the guest agent, then the ARP table."""
        domain = self._domain(name)
        sources = (
            ("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
            ("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
            ("arp", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP),
        )
        for label, source in sources:
            try:
                interfaces = domain.interfaceAddresses(source, 0) or {}
            except libvirt.libvirtError:
                continue
            found = [
                InterfaceAddress(str(iface.get("hwaddr") or ""), addr["addr"], int(addr["prefix"]), label)
                for ifname, iface in interfaces.items()
                if ifname != "lo"
                for addr in iface.get("addrs") or []
                if addr["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4 and not addr["addr"].startswith("127.")
            ]
            if found:
                return found
        return []

    def agent_command(self, name: str, command: dict[str, Any], timeout_s: int = 5) -> Any:
        """Run a QEMU guest agent command; raises HypervisorError when the agent does not answer."""
        try:
            reply = libvirt_qemu.qemuAgentCommand(self._domain(name), json.dumps(command), timeout_s, 0)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"guest agent: {error.get_error_message()}") from None
        return json.loads(reply).get("return")

    # -- console -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def console(self, name: str, *, force: bool = True) -> Iterator[ConsoleStream]:
        """The guest's serial console as a byte stream (what `virsh console` attaches to)."""
        domain = self._domain(name)
        stream = self.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
        try:
            domain.openConsole(None, stream, flags)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot open the console of '{name}': {error.get_error_message()}") from None
        console = ConsoleStream(stream)
        try:
            yield console
        finally:
            console.close()


def _xml_name(xml: str) -> str:
    return str(etree.fromstring(xml.encode()).findtext("name"))


def _with_uuid(xml: str, uuid: str) -> str:
    document = etree.fromstring(xml.encode())
    if document.find("uuid") is None:
        element = etree.Element("uuid")
        element.text = uuid
        document.find("name").addnext(element)
    return etree.tostring(document, encoding="unicode")


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
