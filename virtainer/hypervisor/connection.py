"""A connection to libvirt: the host's facts, defining domains, and the handle to each one."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import libvirt  # type: ignore[import-untyped]
from lxml import etree  # type: ignore[import-untyped]

from virtainer.errors import HypervisorError, NotFoundError
from virtainer.hypervisor.console import ensure_event_loop
from virtainer.hypervisor.handle import Domain
from virtainer.hypervisor.networks import ensure_network_active
from virtainer.hypervisor.states import DomainState, DomainStats, lifecycle_names, state_of
from virtainer.hypervisor.translate import no_raw_libvirt_errors

DEFAULT_URI = "qemu:///system"

Params = ParamSpec("Params")
Result = TypeVar("Result")


def _by_name(
    method: Callable[Concatenate[Domain, Params], Result],
) -> Callable[Concatenate[Hypervisor, str, Params], Result]:
    """`hv.METHOD(name, ...)` as `hv.domain(name).METHOD(...)`: one lookup per call, for callers
    that make one call (an operation making several fetches the handle once)."""

    @functools.wraps(method)
    def call(self: Hypervisor, name: str, /, *args: Params.args, **kwargs: Params.kwargs) -> Result:
        return method(self.domain(name), *args, **kwargs)

    return call


def _ignore_libvirt_console_noise(_ctx: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


@no_raw_libvirt_errors
class Hypervisor:
    """A connection to libvirt. `domain(name)` looks a domain up once for an operation's calls."""

    def __init__(self, uri: str = DEFAULT_URI) -> None:
        ensure_event_loop()
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

    def alive(self) -> bool:
        """False once libvirtd went away (e.g. restarted in the container): reconnect then."""
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    # -- host ----------------------------------------------------------------------------------

    def offers_kvm(self) -> bool:
        try:
            self.conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
        except libvirt.libvirtError:
            return False
        return True

    def ensure_network_active(self, name: str) -> None:
        """Start a libvirt network (like `default`) if it is defined but inactive."""
        ensure_network_active(self.conn, name)

    def list_names(self) -> list[str]:
        return sorted(str(domain.name()) for domain in self.conn.listAllDomains(0))

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
            DomainStats(str(domain.name()), state_of(int(values.get("state.state", -1))), values)
            for domain, values in records
        ]

    def watch_lifecycle(self, callback: Callable[[str, str, str], None]) -> int:
        """Call callback(domain name, event, detail) for every lifecycle event; returns a handle."""

        def relay(_c: object, dom: libvirt.virDomain, event: int, detail: int, _o: object) -> None:
            kind, why = lifecycle_names(event, detail)
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

    # -- domains -------------------------------------------------------------------------------

    def domain(self, name: str) -> Domain:
        """The domain named `name`, looked up once; NotFoundError when there is none."""
        return Domain(self.conn, self._virdomain(name), name)

    def find_domain(self, name: str) -> Domain | None:
        """The domain named `name`, looked up once, or None when there is none."""
        found = self._lookup(name)
        return None if found is None else Domain(self.conn, found, name)

    def _virdomain(self, name: str) -> libvirt.virDomain:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFoundError(f"no VM named '{name}'") from None
            raise HypervisorError(error.get_error_message()) from None

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self._virdomain(name)
        except NotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self._lookup(name) is not None

    def state(self, name: str) -> DomainState:
        """UNDEFINED when there is no such domain (the one per-domain call that never raises
        NotFoundError: "is it there, is it on" is what most callers ask first)."""
        try:
            handle = self.domain(name)
        except NotFoundError:
            return DomainState.UNDEFINED
        return handle.state()

    def define(self, xml: str) -> None:
        """Define or redefine; a redefinition keeps the domain's UUID (libvirt requires it)."""
        existing = self._lookup(_xml_name(xml))
        if existing is not None:
            xml = _with_uuid(xml, str(existing.UUIDString()))
        try:
            self.conn.defineXML(xml)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"libvirt refused the domain: {error.get_error_message()}") from None

    def start_transient(self, xml: str, *, paused: bool = False) -> str:
        """Create and start a domain that is forgotten once it stops (the OCI runtime's VMs).

        paused: QEMU is up (its sockets listen) but no vCPU runs until resume().
        """
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        try:
            return str(self.conn.createXML(xml, flags).name())
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot start the VM: {error.get_error_message()}") from None

    # -- one call on one domain (see _by_name); an operation making several calls, or any call
    # inside the guest, fetches `domain(name)` once and passes it on

    start = _by_name(Domain.start)
    resume = _by_name(Domain.resume)
    shutoff_reason = _by_name(Domain.shutoff_reason)
    xml = _by_name(Domain.xml)
    metadata = _by_name(Domain.metadata)
    info = _by_name(Domain.info)
    destroy = _by_name(Domain.destroy)
    undefine = _by_name(Domain.undefine)
    addresses = _by_name(Domain.addresses)
    fs_thaw = _by_name(Domain.fs_thaw)
    console = _by_name(Domain.console)
    screenshot = _by_name(Domain.screenshot)
    has_display = _by_name(Domain.has_display)
    vnc_endpoint = _by_name(Domain.vnc_endpoint)
    snapshot_names = _by_name(Domain.snapshot_names)


def _xml_name(xml: str) -> str:
    return str(etree.fromstring(xml.encode()).findtext("name"))


def _with_uuid(xml: str, uuid: str) -> str:
    document = etree.fromstring(xml.encode())
    if document.find("uuid") is None:
        element = etree.Element("uuid")
        element.text = uuid
        document.find("name").addnext(element)
    return str(etree.tostring(document, encoding="unicode"))
