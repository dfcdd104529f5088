"""The one exception hierarchy of virtainer.

Every error a user can meet is a `VirtainerError` whose `message` is one readable line and whose
`kind` says what went wrong in the core's terms (invalid input, not found, conflict, ...). The
core knows no HTTP status and no exit code: each front end has its one table from kind to its
own answer (virtainer/api/statuses.py: HTTP status and error code; virtainer/exit_codes.py: the
exit status of the CLI, the container entrypoint and `runtime install`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class ErrorKind(StrEnum):
    FAILED = "failed"  # something failed while doing what was asked
    INVALID = "invalid"  # the request itself was invalid; nothing was created or changed
    BASE_MISMATCH = "base-mismatch"  # the diff was made on another base: the input does not fit the volume
    NOT_FOUND = "not-found"  # the named VM, snapshot or file does not exist
    CONFLICT = "conflict"  # the object is in a state that forbids the operation (locked, wrong state)
    TIMEOUT = "timeout"  # a wait reached its deadline (readiness, graceful stop)
    UNAUTHORIZED = "unauthorized"  # missing or wrong credentials
    UNAVAILABLE = "unavailable"  # not ready yet (the VM is booting): try again later
    IMAGE = "image"  # a base image cannot be fetched, verified or read
    HYPERVISOR = "hypervisor"  # libvirt or QEMU refused or failed an operation


class VirtainerError(Exception):
    """Base class: `message` is one line for the user, `hint` an optional next step, `kind` what
    went wrong (a class's own; an instance may carry another, e.g. an error a remote API gave)."""

    kind = ErrorKind.FAILED

    def __init__(self, message: str, *, hint: str | None = None, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if kind is not None:
            self.kind = kind

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(VirtainerError):
    """A setting has an invalid value. Always names the setting, the value and what is accepted."""

    kind = ErrorKind.INVALID

    def __init__(self, setting: str, value: object, accepted: str) -> None:
        # repr() escapes newlines and control characters: the message stays one line
        shown = f"'{value}'" if isinstance(value, str) and value.isprintable() else repr(value)
        super().__init__(f"invalid {setting}={shown}: {accepted}")
        self.setting = setting
        self.value = value
        self.accepted = accepted


class NotFoundError(VirtainerError):
    kind = ErrorKind.NOT_FOUND


class ConflictError(VirtainerError):
    """The operation does not fit the current state (wrong domain state, diff locked, base mismatch)."""

    kind = ErrorKind.CONFLICT


class BaseMismatchError(ConflictError):
    """A persisted diff was made on another base image than the one now offered."""

    kind = ErrorKind.BASE_MISMATCH


class ImageError(VirtainerError):
    """A base image cannot be fetched, verified or read."""

    kind = ErrorKind.IMAGE


class HypervisorError(VirtainerError):
    """libvirt or QEMU refused or failed an operation."""

    kind = ErrorKind.HYPERVISOR


class AgentUnavailableError(ConflictError, HypervisorError):
    """No QEMU guest agent answers (none in the guest, not started yet, or the VM is not
    running): a conflict with the VM's state, and still a HypervisorError for callers that only
    care that the agent call failed. `busy`: it is there but missed libvirt's 5 s sync (a loaded
    guest); the command was not sent, so it may be retried."""

    kind = ErrorKind.CONFLICT

    def __init__(self, message: str, *, hint: str | None = None, busy: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.busy = busy


class WaitTimeout(VirtainerError):
    kind = ErrorKind.TIMEOUT


class AuthError(VirtainerError):
    kind = ErrorKind.UNAUTHORIZED


def one_line(text: str, limit: int = 1000) -> str:
    """Text as one line: newlines and other control characters become blanks; at most `limit`."""
    line = " ".join("".join(char if char.isprintable() else " " for char in text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_unexpected(error: BaseException) -> str:
    """One line for an error virtainer did not expect: what it is, never a traceback."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return one_line(f"{error.strerror}{where}")
    return one_line(f"unexpected {type(error).__name__}: {error}")


def debug_enabled(environ: Mapping[str, str]) -> bool:
    """VIRTAINER_DEBUG=1: unexpected errors show their traceback too."""
    return environ.get("VIRTAINER_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
