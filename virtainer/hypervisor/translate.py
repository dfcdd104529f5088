"""libvirt errors become virtainer errors with meaning, raised `from None` so users see one line.

`VIR_ERR_NO_DOMAIN` -> NotFoundError, an agent that does not answer -> AgentUnavailableError, a
snapshot refused in this state -> ConflictError. Every public method of the adapter's classes is
wrapped besides (`no_raw_libvirt_errors`): a libvirt call no method translates itself (a domain
gone between lookup and call, libvirtd restarting) still leaves the package as a HypervisorError.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt  # type: ignore[import-untyped]

from virtainer.errors import AgentUnavailableError, ConflictError, HypervisorError, NotFoundError, VirtainerError


def translated(error: libvirt.libvirtError, action: str) -> VirtainerError:
    message = error.get_error_message() or str(error)
    if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFoundError(f"libvirt: {message}")
    return HypervisorError(f"libvirt failed ({action.strip('_').replace('_', ' ')}): {message}")


Wrapped = TypeVar("Wrapped", bound=type)


def no_raw_libvirt_errors(cls: Wrapped) -> Wrapped:
    """Wrap every public method of `cls` (and __init__): a libvirtError becomes a HypervisorError."""

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except libvirt.libvirtError as error:
                raise translated(error, function.__name__) from None

        return call

    for name, member in list(vars(cls).items()):
        if callable(member) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, wrap(member))
    return cls


def is_code(error: libvirt.libvirtError, *codes: int) -> bool:
    return error.get_error_code() in codes


_NO_AGENT = {
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,  # not connected (no agent in the guest) or not answering
    libvirt.VIR_ERR_AGENT_UNSYNCED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,  # the domain has no agent channel
    libvirt.VIR_ERR_OPERATION_INVALID,  # the domain is not running
}


def agent_error(error: libvirt.libvirtError, name: str) -> VirtainerError:
    message = error.get_error_message()
    if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFoundError(f"no VM named '{name}'")
    if error.get_error_code() in _NO_AGENT:
        reason = message.split(": ", 1)[-1]  # "Guest agent is not responding: QEMU guest agent is not connected"
        busy = "not available for now" in message  # libvirt's guest-sync before the command timed out
        return AgentUnavailableError(f"VM '{name}' has no guest agent answering ({reason})", busy=busy)
    return HypervisorError(f"guest agent of '{name}': {message}")


def snapshot_error(error: libvirt.libvirtError, name: str, action: str) -> VirtainerError:
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
