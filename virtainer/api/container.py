"""The API inside the virtainer container: the few calls the controller makes.

    ports = controller_ports + container.reserved_ports(environ)   # never forwarded to the guest
    pending = container.begin_check(environ, spec.name)             # a forked child checks them...
    settings = pending.result()                                     # ...while libvirtd starts
    api = container.start(environ, spec.name, sink.line, settings=settings)  # after machine.up
    ... in supervision: if the VM is off and container.off_on_request(api, name): keep running
    ... at the end: container.stop(api)

Environment: VIRTAINER_API=0 turns it off; VIRTAINER_API_LISTEN (default 0.0.0.0 here),
VIRTAINER_API_PORT (8470), VIRTAINER_API_TOKEN (else generated, printed once to the container
log, kept 0600 in /var/lib/virtainer/api-token). This module imports no third-party package at
import time: an image without FastAPI still runs its VM, and says why it has no API.

The API is lazy: `start` settles the token and binds the port, and FastAPI and uvicorn load on
the first connection (that client waits in the listen backlog meanwhile). A container nobody
calls keeps ~15 MiB less (PSS), and the boot does not share its two cores with those imports
(~0.5 s of CPU). Its settings are checked by a forked child (virtainer.api.settings_check), so
that pydantic too (~10 MiB) loads with FastAPI, not before.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import select
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from virtainer.api.defaults import DEFAULT_PORT
from virtainer.errors import ConfigError, VirtainerError, describe_unexpected
from virtainer.validators import flag_setting

if TYPE_CHECKING:
    from virtainer.api.backend import OnReady
    from virtainer.api.server import ServerHandle
    from virtainer.api.settings import ApiSettings
    from virtainer.readiness import Readiness

CONTAINER_LISTEN = "0.0.0.0"  # reachable at the container's address (-p publishes it)


def enabled(environ: Mapping[str, str]) -> bool:
    return flag_setting("VIRTAINER_API", environ.get("VIRTAINER_API", "1"))


def reserved_ports(environ: Mapping[str, str]) -> tuple[int, ...]:
    """The API's TCP port, left out of the guest's port forwarding. Validates the setting, so a
    bad value stops the container before anything is written."""
    if not enabled(environ):
        return ()
    text = environ.get("VIRTAINER_API_PORT", str(DEFAULT_PORT)).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:  # not '²'
        raise ConfigError("VIRTAINER_API_PORT", text, "a TCP port from 1 to 65535")
    return (int(text),)


@dataclasses.dataclass(frozen=True)
class CheckedApi:
    """The API's settings as the child process checked them: what the container needs until the
    API's first connection (its socket, its token). ApiSettings itself is built again from the
    same environment when the API loads."""

    environ: Mapping[str, str]  # what the settings are read from, VIRTAINER_API_LISTEN decided
    vm: str
    listen: str
    port: int
    token: str | None = dataclasses.field(repr=False)
    token_file: Path
    refuse_local_peers: bool = False

    def settings(self) -> ApiSettings:
        from virtainer.api.settings import ApiSettings

        settings = ApiSettings.from_env(self.environ, vms=(self.vm,))
        return settings.model_copy(update={"refuse_local_peers": True}) if self.refuse_local_peers else settings


class PendingCheck:
    """The settings check, running in a forked child (started by begin_check): it imports pydantic
    and validates on the other core while this process goes on, and answers through a pipe."""

    def __init__(self, environ: Mapping[str, str], vm: str) -> None:
        listen = environ.get("VIRTAINER_API_LISTEN") or CONTAINER_LISTEN
        self.environ, self.vm = {**environ, "VIRTAINER_API_LISTEN": listen}, vm
        self._answer, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._answer)
            _answer_and_exit(write, self.environ, vm)
        os.close(write)

    def result(self) -> CheckedApi | None:
        """The checked settings; None when the API's packages are missing (start() says so).
        An invalid setting raises the ConfigError that names it."""
        with os.fdopen(self._answer, "rb") as stream:
            text = stream.read()
        os.waitpid(self.pid, 0)
        try:
            answer = json.loads(text)
        except ValueError:
            raise VirtainerError("the REST API's settings check ended without an answer") from None
        if "failed" in answer:
            raise VirtainerError(f"the REST API's settings check failed: {answer['failed']}")
        if "invalid" in answer:
            raise ConfigError(*answer["invalid"])
        if "missing" in answer:
            return None
        ok = answer["ok"]
        return CheckedApi(self.environ, self.vm, ok["listen"], ok["port"], ok["token"], Path(ok["token_file"]))


def _answer_and_exit(write: int, environ: dict[str, str], vm: str) -> NoReturn:
    """The forked child: check, write the answer, and leave without the parent's exit handlers."""
    try:
        from virtainer.api.settings_check import check_settings

        try:
            answer = check_settings(environ, vm)
        except Exception as error:  # noqa: BLE001 - the parent reports it in one line
            answer = {"failed": describe_unexpected(error)}
        with os.fdopen(write, "w") as stream:
            json.dump(answer, stream, default=repr)
    finally:
        os._exit(0)


def begin_check(environ: Mapping[str, str], vm: str) -> PendingCheck | None:
    """Start checking the API's settings (an invalid token or listen address, or a port another
    process holds, must stop the container before the VM starts: one line, exit 2), while the
    caller goes on. None: the API is off."""
    return PendingCheck(environ, vm) if enabled(environ) else None


def check(environ: Mapping[str, str], vm: str) -> CheckedApi | None:
    """The API's settings, checked before the VM starts (begin_check, then waiting for it)."""
    pending = begin_check(environ, vm)
    return pending.result() if pending is not None else None


def start(
    environ: Mapping[str, str],
    vm: str,
    announce: Callable[[str], None],
    on_ready: Callable[[str, Readiness], None] | None = None,
    settings: CheckedApi | None = None,
) -> LazyApi | None:
    """Serve the API for `vm` (from its first connection on, see the module's doc), with the
    settings check() returned (checked again when not given). A VM without its API is still a VM:
    a failure to start is announced, not fatal. on_ready(vm, readiness): the VM got ready again
    after a start or revert through the API (the container marks itself healthy again)."""
    if not enabled(environ):
        return None
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:  # found, not loaded: they load on the first connection
        announce(f"REST API unavailable (no module named {', '.join(missing)}); the VM runs without it")
        return None
    try:
        from virtainer.api.tokens import settle_token

        wanted = settings or check(environ, vm)
        assert wanted is not None
        settle_token(wanted.token, wanted.token_file, announce)  # announced now, while the user reads the log
        api = LazyApi(wanted, announce, on_ready)
    except (ImportError, VirtainerError, OSError) as error:
        announce(f"REST API not started: {error}")
        return None
    announce(f"REST API on {wanted.listen}:{api.port} (docs at /docs)")
    return api


class LazyApi:
    """The API's listening socket now; the FastAPI app and uvicorn once a client connects."""

    def __init__(self, checked: CheckedApi, announce: Callable[[str], None], on_ready: OnReady | None) -> None:
        self.checked, self.announce, self.on_ready = checked, announce, on_ready
        family = socket.AF_INET6 if ":" in checked.listen else socket.AF_INET
        self.socket = socket.create_server((checked.listen, checked.port), family=family, backlog=2048)
        self.port = int(self.socket.getsockname()[1])
        self.handle: ServerHandle | None = None
        self._wake_read, self._wake_write = socket.socketpair()
        self.thread = threading.Thread(target=self._serve_on_first_connection, name="virtainer-api", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.checked.listen in ("0.0.0.0", "") else self.checked.listen
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def _serve_on_first_connection(self) -> None:
        readable, _, _ = select.select([self.socket, self._wake_read], [], [])
        if self._wake_read in readable:
            return  # stopped before anyone connected
        try:
            from virtainer.api.server import run_in_thread

            self.handle = run_in_thread(
                self.checked.settings(), announce=self.announce, on_ready=self.on_ready, sockets=[self.socket]
            )
        except (ImportError, VirtainerError) as error:
            self.announce(f"REST API not started: {error}")
            self.socket.close()
            return
        self.thread = self.handle.thread  # the caller follows uvicorn's thread from now on

    def stop(self, timeout_s: float = 10.0) -> None:
        self._wake_write.send(b"x")
        self.thread.join(timeout_s)
        if self.handle is not None:
            self.handle.stop(timeout_s)
        self.socket.close()
        for end in (self._wake_read, self._wake_write):
            end.close()


def off_on_request(api: LazyApi | None, vm: str) -> bool:
    """The VM was powered off through the API (not by its guest): never before the API ran."""
    return api is not None and api.handle is not None and api.handle.guard.off_on_request(vm)


def operation_in_progress(api: LazyApi | None, vm: str) -> str | None:
    return api.handle.guard.current(vm) if api is not None and api.handle is not None else None


def finish_operations(api: LazyApi | None, timeout_s: float) -> list[str]:
    """Before the container stops its VM: let API operations in progress end (no new ones start),
    within timeout_s. Returns those still running at the deadline."""
    return api.handle.guard.drain(timeout_s) if api is not None and api.handle is not None else []


def stop(api: LazyApi | None) -> None:
    if api is not None:
        api.stop()
