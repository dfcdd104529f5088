"""libvirt, and only here: every libvirt call and libvirt error of virtainer goes through this module.

libvirt errors become virtainer errors with meaning (`VIR_ERR_NO_DOMAIN` -> NotFoundError,
`VIR_ERR_OPERATION_INVALID` on stop -> already off), raised `from None` so users see one line.
Every public method of `Hypervisor` and `ConsoleStream` is wrapped besides (`_no_raw_libvirt_errors`):
a libvirt call no method translates itself (a domain gone between lookup and call, libvirtd
restarting) still leaves this module as a HypervisorError, never as a libvirtError.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import libvirt
import libvirt_qemu
from lxml import etree

from virtainer.domain import METADATA_NS
from virtainer.errors import AgentUnavailableError, ConflictError, HypervisorError, NotFoundError, VirtainerError

DEFAULT_URI = "qemu:///system"


class DomainState(StrEnum):
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

_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "lost while libvirtd was down",
}


@dataclass(frozen=True)
class DomainStats:
    """One domain's counters from libvirt's bulk stats (getAllDomainStats), keys as libvirt names
    them ("cpu.time", "block.0.wr.bytes", "balloon.rss", ...; see virsh domstats)."""

    name: str
    state: DomainState
    values: dict[str, Any]


@dataclass(frozen=True)
class VncEndpoint:
    """Where a running domain's VNC display listens: a unix socket, or a host and port."""

    socket: str | None = None
    host: str | None = None
    port: int | None = None


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


def _translated(error: libvirt.libvirtError, action: str) -> VirtainerError:
    message = error.get_error_message() or str(error)
    if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFoundError(f"libvirt: {message}")
    return HypervisorError(f"libvirt failed ({action.strip('_').replace('_', ' ')}): {message}")


Wrapped = TypeVar("Wrapped", bound=type)


def _no_raw_libvirt_errors(cls: Wrapped) -> Wrapped:
    """Wrap every public method of `cls` (and __init__): a libvirtError becomes a HypervisorError."""

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except libvirt.libvirtError as error:
                raise _translated(error, function.__name__) from None

        return call

    for name, member in list(vars(cls).items()):
        if callable(member) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, wrap(member))
    return cls


@_no_raw_libvirt_errors
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

    def all_domain_stats(self, names: tuple[str, ...] = ()) -> list[DomainStats]:
        """State, CPU, balloon, vCPU, NIC and disk counters of every domain (or of `names`) in one
        libvirt round trip: what a metrics scrape reads."""
        groups = (
            libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
            | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK
        )  # fmt: skip
        try:
            if names:
                domains = [domain for name in names if (domain := self._lookup(name)) is not None]
                records = self.conn.domainListGetStats(domains, groups, 0) if domains else []
            else:
                records = self.conn.getAllDomainStats(groups, 0)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot read domain statistics: {error.get_error_message()}") from None
        return [
            DomainStats(str(domain.name()), _STATES.get(int(values.get("state.state", -1)), DomainState.OTHER), values)
            for domain, values in records
        ]

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self._domain(name)
        except NotFoundError:
            return None

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

    def start_transient(self, xml: str, *, paused: bool = False) -> str:
        """Create and start a domain that is forgotten once it stops (the OCI runtime's VMs).

        paused: QEMU is up (its sockets listen) but no vCPU runs until resume().
        """
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        try:
            return str(self.conn.createXML(xml, flags).name())
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot start the VM: {error.get_error_message()}") from None

    def resume(self, name: str) -> None:
        try:
            self._domain(name).resume()
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot resume '{name}': {error.get_error_message()}") from None

    def state(self, name: str) -> DomainState:
        try:
            domain = self._domain(name)
        except NotFoundError:
            return DomainState.UNDEFINED
        try:
            code, _reason = domain.state()
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return DomainState.UNDEFINED  # a transient domain ended between its lookup and this query
            raise
        return _STATES.get(code, DomainState.OTHER)

    def shutoff_reason(self, name: str) -> str:
        """Why the domain is off: shutdown (the guest powered off), destroyed, crashed, ... or ''."""
        code, reason = self._domain(name).state()
        if code == libvirt.VIR_DOMAIN_CRASHED:
            return "crashed"
        if code != libvirt.VIR_DOMAIN_SHUTOFF:
            return ""
        return _SHUTOFF_REASONS.get(reason, "unknown")

    def xml(self, name: str, *, inactive: bool = False, secure: bool = False) -> str:
        """secure: with the definition's secrets (VNC password), to define it again as it is."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        flags |= libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
        return str(self._domain(name).XMLDesc(flags))

    def metadata(self, name: str) -> dict[str, str]:
        """virtainer's own record inside the domain XML (see metadata.xml.j2)."""
        try:
            text = self._domain(name).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        except libvirt.libvirtError:
            return {}
        values: dict[str, str] = {}
        for child in etree.fromstring(text.encode()):  # libvirt returns it without the namespace
            name = etree.QName(child).localname
            values[name] = child.text or ""
            if name == "accelerator":
                values["accelerator-reason"] = child.get("reason", "")
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
            return error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID  # already off
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
        """Forget the domain; disks, diff, NVRAM and TPM state are kept."""
        domain = self._domain(name)
        if domain.isActive():
            raise ConflictError(f"VM '{name}' is running; stop it before undefining it")
        flags = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_KEEP_TPM
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
        """Run a QEMU guest agent command; raises AgentUnavailableError when no agent answers,
        HypervisorError when the agent refused the command."""
        try:
            reply = libvirt_qemu.qemuAgentCommand(self._domain(name), json.dumps(command), timeout_s, 0)
        except libvirt.libvirtError as error:
            raise _agent_error(error, name) from None
        return json.loads(reply).get("return")

    def guest_info(self, name: str) -> dict[str, Any]:
        """libvirt's aggregated agent facts (OS, users, time zone, hostname, filesystems,
        interfaces) as its flat typed parameters: {"os.id": "debian", "fs.0.mountpoint": "/", ...}."""
        types = (
            libvirt.VIR_DOMAIN_GUEST_INFO_USERS | libvirt.VIR_DOMAIN_GUEST_INFO_OS
            | libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
            | libvirt.VIR_DOMAIN_GUEST_INFO_FILESYSTEM | libvirt.VIR_DOMAIN_GUEST_INFO_INTERFACES
        )  # fmt: skip
        try:
            return dict(self._domain(name).guestInfo(types, 0))
        except libvirt.libvirtError as error:
            raise _agent_error(error, name) from None

    def authorized_keys(self, name: str, user: str) -> list[str]:
        """The user's ~/.ssh/authorized_keys in the guest, through the agent."""
        try:
            return [str(key) for key in self._domain(name).authorizedSSHKeysGet(user, 0)]
        except libvirt.libvirtError as error:
            raise _agent_error(error, name) from None

    def change_authorized_keys(self, name: str, user: str, keys: list[str], *, remove: bool) -> None:
        """Append keys to, or remove them from, the user's authorized_keys in the guest."""
        flag = libvirt.VIR_DOMAIN_AUTHORIZED_SSH_KEYS_SET_APPEND
        if remove:
            flag = libvirt.VIR_DOMAIN_AUTHORIZED_SSH_KEYS_SET_REMOVE
        try:
            self._domain(name).authorizedSSHKeysSet(user, keys, flag)
        except libvirt.libvirtError as error:
            raise _agent_error(error, name) from None

    def set_user_password(self, name: str, user: str, password: str) -> None:
        """Set a guest user's password through the agent (chpasswd in the guest)."""
        try:
            self._domain(name).setUserPassword(user, password, 0)
        except libvirt.libvirtError as error:
            raise _agent_error(error, name) from None

    def has_display(self, name: str) -> bool:
        """The domain has a display adapter (a video device)."""
        return etree.fromstring(self.xml(name).encode()).find("devices/video") is not None

    def vnc_endpoint(self, name: str) -> VncEndpoint | None:
        """The running domain's VNC display from its live XML; None without one (or while off)."""
        graphics = etree.fromstring(self.xml(name).encode()).find("devices/graphics[@type='vnc']")
        if graphics is None:
            return None
        listen = graphics.find("listen")
        socket = graphics.get("socket") or (listen.get("socket") if listen is not None else None)
        if socket:
            return VncEndpoint(socket=socket)
        port = int(graphics.get("port") or -1)
        if port <= 0:
            return None
        host = graphics.get("listen") or "127.0.0.1"
        return VncEndpoint(host="127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port=port)

    def screenshot(self, name: str, path: Path) -> str:
        """Save the guest's screen (its first display adapter) to `path`; returns the MIME type.

        QEMU sends PNG (or PPM when it is older than 7.1), whatever the file is called.
        """
        domain = self._domain(name)
        stream = self.conn.newStream(0)
        try:
            mime = str(domain.screenshot(stream, 0, 0))
            data = bytearray()
            while chunk := stream.recv(262144):
                if not isinstance(chunk, bytes):
                    raise HypervisorError(f"screenshot of '{name}': the stream would block")
                data.extend(chunk)
            stream.finish()
        except libvirt.libvirtError as error:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise HypervisorError(f"cannot take a screenshot of '{name}': {error.get_error_message()}") from None
        path.write_bytes(bytes(data))
        return mime

    # -- console -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def console(self, name: str, *, force: bool = True) -> Iterator[ConsoleStream]:
        """The guest's serial console as a byte stream (what `virsh console` attaches to)."""
        domain = self._domain(name)
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
        try:
            stream = self.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            domain.openConsole(None, stream, flags)
            console = ConsoleStream(stream)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot open the console of '{name}': {error.get_error_message()}") from None
        try:
            yield console
        finally:
            console.close()

    # -- snapshots (issue 4: snapshots and the REST API's extra operations) ----------------------
    # Snapshots are internal (inside the diff qcow2): they travel with the volume, and the
    # read-only base is never written. virtainer/snapshots.py decides what to call, and when.

    def snapshot_create(self, name: str, xml: str, *, redefine: bool = False, current: bool = False) -> None:
        """Create (or, with redefine, only record in libvirt) one snapshot from its XML."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC if not redefine else 0
        if redefine:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT if current else 0
        try:
            self._domain(name).snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as error:
            raise _snapshot_error(error, name, "create") from None

    def snapshot_disk_live(self, name: str, snapshot: str, diff_path: str) -> None:
        """A disk-only internal snapshot of the running diff, with no memory state.

        libvirt 9.0 refuses internal disk-only snapshots of an active domain ("active qemu domains
        require external disk snapshots"), and external ones would add a file beside the diff that
        hangs off it. QEMU's blockdev-snapshot-internal-sync does exactly what we need; libvirt
        marks the domain "custom-monitor" tainted for it, which changes nothing else.
        """
        node = self._format_node_of(name, diff_path)
        command = {"device": node, "name": snapshot}
        self._qmp(name, {"execute": "blockdev-snapshot-internal-sync", "arguments": command})

    def snapshot_delete_live_internal(self, name: str, snapshot: str, diff_path: str) -> None:
        """Undo snapshot_disk_live when recording it in libvirt failed (libvirt never knew it)."""
        node = self._format_node_of(name, diff_path)
        command = {"device": node, "name": snapshot}
        self._qmp(name, {"execute": "blockdev-snapshot-delete-internal-sync", "arguments": command})

    def _format_node_of(self, name: str, path: str) -> str:
        nodes = self._qmp(name, {"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        for node in nodes:
            if node.get("file") == path and node.get("drv") == "qcow2" and not node.get("ro"):
                return str(node["node-name"])
        raise HypervisorError(f"VM '{name}' has no writable qcow2 node for {path}")

    def _qmp(self, name: str, command: dict[str, Any]) -> Any:
        try:
            reply = libvirt_qemu.qemuMonitorCommand(self._domain(name), json.dumps(command), 0)
        except libvirt.libvirtError as error:
            raise _snapshot_error(error, name, command["execute"]) from None
        return json.loads(reply).get("return")

    def snapshot_names(self, name: str) -> list[str]:
        try:
            return [str(snap.getName()) for snap in self._domain(name).listAllSnapshots(0)]
        except libvirt.libvirtError as error:
            raise _snapshot_error(error, name, "list") from None

    def snapshot_xml(self, name: str, snapshot: str) -> str:
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE
        return str(self._snapshot(name, snapshot).getXMLDesc(flags))

    def snapshot_current(self, name: str) -> str | None:
        domain = self._domain(name)
        try:
            if not domain.hasCurrentSnapshot(0):
                return None
            return str(domain.snapshotCurrent(0).getName())
        except libvirt.libvirtError:
            return None

    def snapshot_delete(self, name: str, snapshot: str, *, metadata_only: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0
        try:
            self._snapshot(name, snapshot).delete(flags)
        except libvirt.libvirtError as error:
            raise _snapshot_error(error, name, "delete") from None

    def snapshot_revert(self, name: str, snapshot: str, *, running: bool) -> None:
        """Revert disk (and memory, if the snapshot has it); running=True leaves the VM running."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING if running else 0
        try:
            self._domain(name).revertToSnapshot(self._snapshot(name, snapshot), flags)
        except libvirt.libvirtError as error:
            raise _snapshot_error(error, name, "revert") from None

    def _snapshot(self, name: str, snapshot: str) -> libvirt.virDomainSnapshot:
        try:
            return self._domain(name).snapshotLookupByName(snapshot, 0)
        except libvirt.libvirtError as error:
            raise _snapshot_error(error, name, "look up") from None

    def fs_freeze(self, name: str) -> int:
        """Freeze the guest's filesystems through the agent; returns how many were frozen."""
        try:
            return int(self._domain(name).fsFreeze(None, 0))
        except libvirt.libvirtError as error:
            message = error.get_error_message()
            raise HypervisorError(f"guest agent could not freeze filesystems: {message}") from None

    def fs_thaw(self, name: str) -> None:
        try:
            self._domain(name).fsThaw(None, 0)
        except libvirt.libvirtError as error:
            message = error.get_error_message()
            raise HypervisorError(f"guest agent could not thaw filesystems: {message}") from None

    def reboot(self, name: str, *, agent: bool) -> None:
        flag = libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN
        if agent:
            flag = libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT
        try:
            self._domain(name).reboot(flag)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                raise ConflictError(f"VM '{name}' is not running") from None
            raise HypervisorError(f"cannot reboot '{name}': {error.get_error_message()}") from None

    def alive(self) -> bool:
        """False once libvirtd went away (e.g. restarted in the container): reconnect then."""
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    def watch_lifecycle(self, callback: Callable[[str, str, str], None]) -> int:
        """Call callback(domain name, event, detail) for every lifecycle event; returns a handle."""

        def relay(_c: object, dom: libvirt.virDomain, event: int, detail: int, _o: object) -> None:
            kind, why = _lifecycle_names(event, detail)
            try:
                name = str(dom.name())
            except libvirt.libvirtError:
                return  # runs in libvirt's event loop: nothing may escape it
            callback(name, kind, why)

        event_id = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
        return int(self.conn.domainEventRegisterAny(None, event_id, relay, None))

    def unwatch(self, handle: int) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.domainEventDeregisterAny(handle)


_NO_AGENT = {
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,  # not connected (no agent in the guest) or not answering
    libvirt.VIR_ERR_AGENT_UNSYNCED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,  # the domain has no agent channel
    libvirt.VIR_ERR_OPERATION_INVALID,  # the domain is not running
}


def _agent_error(error: libvirt.libvirtError, name: str) -> VirtainerError:
    message = error.get_error_message()
    if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFoundError(f"no VM named '{name}'")
    if error.get_error_code() in _NO_AGENT:
        reason = message.split(": ", 1)[-1]  # "Guest agent is not responding: QEMU guest agent is not connected"
        busy = "not available for now" in message  # libvirt's guest-sync before the command timed out
        return AgentUnavailableError(f"VM '{name}' has no guest agent answering ({reason})", busy=busy)
    return HypervisorError(f"guest agent of '{name}': {message}")


def _snapshot_error(error: libvirt.libvirtError, name: str, action: str) -> VirtainerError:
    code = error.get_error_code()
    message = error.get_error_message()
    if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        return NotFoundError(f"VM '{name}' has no such snapshot", hint=message)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFoundError(f"no VM named '{name}'")
    if code in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY):
        return ConflictError(f"cannot {action} a snapshot of '{name}' now: {message}")
    if code in (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
        # e.g. memory snapshots of a VM with UEFI (pflash) firmware, which libvirt 9.0 refuses
        return ConflictError(f"cannot {action} this snapshot of '{name}': {message}")
    return HypervisorError(f"snapshot {action} on '{name}' failed: {message}")


_LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
_STOPPED_DETAIL = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "from-snapshot",
}


def _lifecycle_names(event: int, detail: int) -> tuple[str, str]:
    kind = _LIFECYCLE.get(event, "other")
    return kind, _STOPPED_DETAIL.get(detail, str(detail)) if kind == "stopped" else str(detail)


def _xml_name(xml: str) -> str:
    return str(etree.fromstring(xml.encode()).findtext("name"))


def _with_uuid(xml: str, uuid: str) -> str:
    document = etree.fromstring(xml.encode())
    if document.find("uuid") is None:
        element = etree.Element("uuid")
        element.text = uuid
        document.find("name").addnext(element)
    return etree.tostring(document, encoding="unicode")


@_no_raw_libvirt_errors
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
