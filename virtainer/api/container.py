"""The API inside the virtainer container: the few calls the controller makes.

    ports = controller_ports + container.reserved_ports(environ)   # never forwarded to the guest
    api = container.start(environ, spec.name, sink.line)            # after machine.up
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


def start(
    environ: Mapping[str, str],
    vm: str,
    announce: Callable[[str], None],
    on_ready: Callable[[str, Readiness], None] | None = None,
) -> ServerHandle | None:
    """Serve the API for `vm` on a daemon thread. A VM without its API is still a VM: a failure
    to start is announced, not fatal. on_ready(vm, readiness): the VM got ready again after a
    start or revert through the API (the container marks itself healthy again)."""
    if not enabled(environ):
        return None
    try:  # FastAPI, uvicorn and pydantic only when the API is wanted
        from virtainer.api.server import run_in_thread
        from virtainer.api.settings import ApiSettings
    except ImportError as error:
        announce(f"REST API unavailable ({error}); the VM runs without it")
        return None
    try:
        listen = environ.get("VIRTAINER_API_LISTEN") or CONTAINER_LISTEN
        wanted = ApiSettings.from_env(environ, listen=listen, vms=(vm,))
        handle = run_in_thread(wanted, announce=announce, on_ready=on_ready)
    except VirtainerError as error:
        announce(f"REST API not started: {error}")
        return None
    announce(f"REST API on {wanted.listen}:{handle.port} (docs at /docs)")
    return handle


def off_on_request(handle: ServerHandle | None, vm: str) -> bool:
    return handle is not None and handle.guard.off_on_request(vm)


def stop(handle: ServerHandle | None) -> None:
    if handle is not None:
        handle.stop()
