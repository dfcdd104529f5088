"""The QEMU guest agent: commands, facts, filesystem freeze, SSH keys and passwords in the guest."""

from __future__ import annotations

import json
from typing import Any

import libvirt  # type: ignore[import-untyped]
import libvirt_qemu  # type: ignore[import-untyped]

from virtainer.errors import HypervisorError
from virtainer.hypervisor.base import DomainBase
from virtainer.hypervisor.translate import agent_error, no_raw_libvirt_errors


@no_raw_libvirt_errors
class Agent(DomainBase):
    def agent_command(self, command: dict[str, Any], timeout_s: int = 5) -> Any:
        """Run a QEMU guest agent command; raises AgentUnavailableError when no agent answers,
        HypervisorError when the agent refused the command."""
        try:
            reply = libvirt_qemu.qemuAgentCommand(self._domain, json.dumps(command), timeout_s, 0)
        except libvirt.libvirtError as error:
            raise agent_error(error, self.name) from None
        return json.loads(reply).get("return")

    def guest_info(self) -> dict[str, Any]:
        """libvirt's aggregated agent facts (OS, users, time zone, hostname, filesystems,
        interfaces) as its flat typed parameters: {"os.id": "debian", "fs.0.mountpoint": "/", ...}."""
        types = (
            libvirt.VIR_DOMAIN_GUEST_INFO_USERS | libvirt.VIR_DOMAIN_GUEST_INFO_OS
            | libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
            | libvirt.VIR_DOMAIN_GUEST_INFO_FILESYSTEM | libvirt.VIR_DOMAIN_GUEST_INFO_INTERFACES
        )  # fmt: skip
        try:
            return dict(self._domain.guestInfo(types, 0))
        except libvirt.libvirtError as error:
            raise agent_error(error, self.name) from None

    def authorized_keys(self, user: str) -> list[str]:
        """The user's ~/.ssh/authorized_keys in the guest, through the agent."""
        try:
            return [str(key) for key in self._domain.authorizedSSHKeysGet(user, 0)]
        except libvirt.libvirtError as error:
            raise agent_error(error, self.name) from None

    def change_authorized_keys(self, user: str, keys: list[str], *, remove: bool) -> None:
        """Append keys to, or remove them from, the user's authorized_keys in the guest."""
        flag = libvirt.VIR_DOMAIN_AUTHORIZED_SSH_KEYS_SET_APPEND
        if remove:
            flag = libvirt.VIR_DOMAIN_AUTHORIZED_SSH_KEYS_SET_REMOVE
        try:
            self._domain.authorizedSSHKeysSet(user, keys, flag)
        except libvirt.libvirtError as error:
            raise agent_error(error, self.name) from None

    def set_user_password(self, user: str, password: str) -> None:
        """Set a guest user's password through the agent (chpasswd in the guest)."""
        try:
            self._domain.setUserPassword(user, password, 0)
        except libvirt.libvirtError as error:
            raise agent_error(error, self.name) from None

    def fs_freeze(self) -> int:
        """Freeze the guest's filesystems through the agent; returns how many were frozen."""
        try:
            return int(self._domain.fsFreeze(None, 0))
        except libvirt.libvirtError as error:
            message = error.get_error_message()
            raise HypervisorError(f"guest agent could not freeze filesystems: {message}") from None

    def fs_thaw(self) -> None:
        try:
            self._domain.fsThaw(None, 0)
        except libvirt.libvirtError as error:
            message = error.get_error_message()
            raise HypervisorError(f"guest agent could not thaw filesystems: {message}") from None
