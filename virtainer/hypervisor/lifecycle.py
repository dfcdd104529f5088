"""A domain's lifecycle: start, stop, reboot, its state, its definition and virtainer's record in it."""

from __future__ import annotations

import libvirt  # type: ignore[import-untyped]

from virtainer.domain_model import METADATA_NS, parse_metadata
from virtainer.errors import ConflictError, HypervisorError
from virtainer.hypervisor.base import DomainBase
from virtainer.hypervisor.states import SHUTOFF_REASONS, DomainState, state_of
from virtainer.hypervisor.translate import no_raw_libvirt_errors


@no_raw_libvirt_errors
class Lifecycle(DomainBase):
    def start(self) -> None:
        if self._domain.isActive():
            return
        try:
            self._domain.create()
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot start '{self.name}': {error.get_error_message()}") from None

    def resume(self) -> None:
        try:
            self._domain.resume()
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot resume '{self.name}': {error.get_error_message()}") from None

    def state(self) -> DomainState:
        try:
            code, _reason = self._domain.state()
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return DomainState.UNDEFINED  # a transient domain ended between its lookup and this query
            raise
        return state_of(code)

    def shutoff_reason(self) -> str:
        """Why the domain is off: shutdown (the guest powered off), destroyed, crashed, ... or ''."""
        code, reason = self._domain.state()
        if code == libvirt.VIR_DOMAIN_CRASHED:
            return "crashed"
        if code != libvirt.VIR_DOMAIN_SHUTOFF:
            return ""
        return SHUTOFF_REASONS.get(reason, "unknown")

    def xml(self, *, inactive: bool = False, secure: bool = False) -> str:
        """secure: with the definition's secrets (VNC password), to define it again as it is."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        flags |= libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
        return str(self._domain.XMLDesc(flags))

    def metadata(self) -> dict[str, str]:
        """virtainer's own record inside the domain XML (see metadata.xml.j2)."""
        try:
            text = self._domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        except libvirt.libvirtError:
            return {}
        return parse_metadata(str(text))

    def info(self) -> tuple[int, int]:
        """(vCPUs, memory MiB) as libvirt has them."""
        _state, max_kib, _kib, vcpus, _time = self._domain.info()
        return int(vcpus), int(max_kib) // 1024

    def request_shutdown(self, *, agent: bool) -> bool:
        """Ask the guest to power off (agent or ACPI). False when that channel refused."""
        flag = libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT if agent else libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
        try:
            self._domain.shutdownFlags(flag)
        except libvirt.libvirtError as error:
            return bool(error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID)  # already off
        return True

    def destroy(self) -> bool:
        """Power off at once. False when it was not running."""
        try:
            self._domain.destroy()
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                return False
            raise HypervisorError(f"cannot destroy '{self.name}': {error.get_error_message()}") from None
        return True

    def reboot(self, *, agent: bool) -> None:
        flag = libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT if agent else libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN
        try:
            self._domain.reboot(flag)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                raise ConflictError(f"VM '{self.name}' is not running") from None
            raise HypervisorError(f"cannot reboot '{self.name}': {error.get_error_message()}") from None

    def undefine(self) -> None:
        """Forget the domain; disks, diff, NVRAM and TPM state are kept."""
        if self._domain.isActive():
            raise ConflictError(f"VM '{self.name}' is running; stop it before undefining it")
        flags = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_KEEP_TPM
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        try:
            self._domain.undefineFlags(flags)
        except libvirt.libvirtError as error:
            raise HypervisorError(f"cannot undefine '{self.name}': {error.get_error_message()}") from None
