"""The API inside the virtainer container: the few calls the controller makes.

    ports = controller_ports + container.reserved_ports(environ)   # never forwarded to the guest
    settings = container.check(environ, spec.name)                  # before anything starts
    api = container.start(environ, spec.name, sink.line, settings=settings)  # after machine.up
    ... in supervision: if the VM is off and container.off_on_request(api, name): keep running
    ... at the end: container.stop(api)

Environment: VIRTAINER_API=0 turns it off; VIRTAINER_API_LISTEN (default 0.0.0.0 here),
VIRTAINER_API_PORT (8470), VIRTAINER_API_TOKEN (else generated, printed once to the container
log, kept 0600 in /var/lib/virtainer/api-token). This module imports no third-party package at
import time: an image without FastAPI still runs its VM, and says why it has no API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from virtainer.api.defaults import DEFAULT_PORT
from virtainer.errors import ConfigError, VirtainerError

if TYPE_CHECKING:
    from virtainer.api.server import ServerHandle
    from virtainer.api.settings import ApiSettings
    from virtainer.readiness import Readiness

CONTAINER_LISTEN = "0.0.0.0"  # reachable at the container's address (-p publishes it)


def enabled(environ: Mapping[str, str]) -> bool:
    text = environ.get("VIRTAINER_API", "1").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError("VIRTAINER_API", text, "1/true/yes/on or 0/false/no/off")


def reserved_ports(environ: Mapping[str, str]) -> tuple[int, ...]:
    """The API's TCP port, left out of the guest's port forwarding. Validates the setting, so a
    bad value stops the container before anything is written."""
    if not enabled(environ):
        return ()
    text = environ.get("VIRTAINER_API_PORT", str(DEFAULT_PORT)).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:  # not '²'
        raise ConfigError("VIRTAINER_API_PORT", text, "a TCP port from 1 to 65535")
    return (int(text),)


def check(environ: Mapping[str, str], vm: str) -> ApiSettings | None:
    """The API's settings, checked before the VM starts: an invalid token or listen address, or
    a port another process holds, stops the container (one line, exit 2) instead of leaving a
    VM without its API. None: the API is off, or its packages are missing (start() says so)."""
    if not enabled(environ):
        return None
    try:
        from virtainer.api.settings import ApiSettings
    except ImportError:
        return None
    listen = environ.get("VIRTAINER_API_LISTEN") or CONTAINER_LISTEN
    settings = ApiSettings.from_env({**environ, "VIRTAINER_API_LISTEN": listen}, vms=(vm,))
    settings.check_listen()
    return settings


def start(
    environ: Mapping[str, str],
    vm: str,
    announce: Callable[[str], None],
    on_ready: Callable[[str, Readiness], None] | None = None,
    settings: ApiSettings | None = None,
) -> ServerHandle | None:
    """Serve the API for `vm` on a daemon thread, with the settings check() returned (checked
    again when not given). A VM without its API is still a VM: a failure to start is announced,
    not fatal. on_ready(vm, readiness): the VM got ready again after a start or revert through
    the API (the container marks itself healthy again)."""
    if not enabled(environ):
        return None
    try:  # FastAPI, uvicorn and pydantic only when the API is wanted
        from virtainer.api.server import run_in_thread
    except ImportError as error:
        announce(f"REST API unavailable ({error}); the VM runs without it")
        return None
    try:
        wanted = settings or check(environ, vm)
        assert wanted is not None
        handle = run_in_thread(wanted, announce=announce, on_ready=on_ready)
    except VirtainerError as error:
        announce(f"REST API not started: {error}")
        return None
    announce(f"REST API on {wanted.listen}:{handle.port} (docs at /docs)")
    return handle


def off_on_request(handle: ServerHandle | None, vm: str) -> bool:
    return handle is not None and handle.guard.off_on_request(vm)


def operation_in_progress(handle: ServerHandle | None, vm: str) -> str | None:
    return handle.guard.current(vm) if handle is not None else None


def finish_operations(handle: ServerHandle | None, timeout_s: float) -> list[str]:
    """Before the container stops its VM: let API operations in progress end (no new ones start),
    within timeout_s. Returns those still running at the deadline."""
    return handle.guard.drain(timeout_s) if handle is not None else []


def stop(handle: ServerHandle | None) -> None:
    if handle is not None:
        handle.stop()
