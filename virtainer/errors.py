"""The one exception hierarchy of virtainer.

Every error a user can meet is a `VirtainerError` whose `message` is one readable line. Front ends
map them in one place: the CLI and the container entrypoint to exit codes, the REST API to one
JSON error shape with `http_status`.
"""

from __future__ import annotations

from collections.abc import Mapping

EXIT_OK = 0
EXIT_RUNTIME = 1  # something failed while doing what was asked
EXIT_CONFIG = 2  # the request itself was invalid; nothing was created or changed
EXIT_TIMEOUT = 3  # a wait reached its deadline (readiness, graceful stop)
EXIT_CONFLICT = 4  # the object is in a state that forbids the operation (locked, wrong state)
EXIT_NOT_FOUND = 5  # the named VM, snapshot or file does not exist


class VirtainerError(Exception):
    """Base class: `message` is one line for the user, `hint` an optional next step."""

    exit_code = EXIT_RUNTIME
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(VirtainerError):
    """A setting has an invalid value. Always names the setting, the value and what is accepted."""

    exit_code = EXIT_CONFIG
    http_status = 422

    def __init__(self, setting: str, value: object, accepted: str) -> None:
        # repr() escapes newlines and control characters: the message stays one line
        shown = f"'{value}'" if isinstance(value, str) and value.isprintable() else repr(value)
        super().__init__(f"invalid {setting}={shown}: {accepted}")
        self.setting = setting
        self.value = value
        self.accepted = accepted


class NotFoundError(VirtainerError):
    exit_code = EXIT_NOT_FOUND
    http_status = 404


class ConflictError(VirtainerError):
    """The operation does not fit the current state (wrong domain state, diff locked, base mismatch)."""

    exit_code = EXIT_CONFLICT
    http_status = 409


class BaseMismatchError(ConflictError):
    """A persisted diff was made on another base image than the one now offered."""

    exit_code = EXIT_CONFIG


class ImageError(VirtainerError):
    """A base image cannot be fetched, verified or read."""


class HypervisorError(VirtainerError):
    """libvirt or QEMU refused or failed an operation."""


class AgentUnavailableError(ConflictError, HypervisorError):
    """No QEMU guest agent answers (none in the guest, not started yet, or the VM is not
    running): a conflict with the VM's state, and still a HypervisorError for callers that only
    care that the agent call failed. `busy`: it is there but missed libvirt's 5 s sync (a loaded
    guest); the command was not sent, so it may be retried."""

    def __init__(self, message: str, *, hint: str | None = None, busy: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.busy = busy


class WaitTimeout(VirtainerError):
    exit_code = EXIT_TIMEOUT
    http_status = 504


class AuthError(VirtainerError):
    http_status = 401


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
