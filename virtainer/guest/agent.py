"""The QEMU guest agent, one call at a time: retried while busy, and a one-line refusal naming
what to use instead (SSH, the serial console) when the guest has no agent."""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from virtainer.errors import AgentUnavailableError, ConflictError, VirtainerError, WaitTimeout
from virtainer.guest.ssh import ssh_banner
from virtainer.hypervisor import Domain

CHUNK = 1 << 20  # bytes per guest-file-read: 1.4 MB of base64 in one agent reply
# ... but a guest-file-write request above ~256 KiB of JSON is refused by QEMU 7.2's agent ("JSON
# parse error") and leaves it deaf for seconds (measured: 160 KiB of data passes, 200 KiB fails)
WRITE_CHUNK = 128 << 10
AGENT_TIMEOUT_S = 30  # one agent call (a chunk of a big file under TCG takes well under that)
BUSY_RETRY_S = 60.0  # how long a busy agent is retried
SYNC_LIMIT_S = 10.0  # libvirt gives up its guest-sync after 5 s, a command after AGENT_TIMEOUT_S
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$", re.IGNORECASE)


@dataclass
class _Agent:
    dom: Domain

    @property
    def name(self) -> str:
        return self.dom.name

    def call(self, execute: str, arguments: dict[str, Any]) -> Any:
        command = {"execute": execute, "arguments": arguments}
        return _patiently(lambda: self.dom.agent_command(command, AGENT_TIMEOUT_S))

    def spawn(self, argv: list[str], env: list[str], *, capture: bool = False) -> int:
        reply = self.call("guest-exec", {"path": argv[0], "arg": argv[1:], "env": env, "capture-output": capture})
        return int(reply["pid"])

    def status(self, pid: int) -> dict[str, Any]:
        reply: dict[str, Any] = self.call("guest-exec-status", {"pid": pid})
        return reply

    def wait(self, pid: int, deadline: float) -> dict[str, Any]:
        pause = threading.Event()
        interval = 0.02
        while not (status := self.status(pid))["exited"]:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"the guest agent of '{self.name}' did not report the end of a helper command")
            pause.wait(interval)
            interval = min(interval * 2, 0.5)
        return status

    def shell(self, script: str, *args: str, timeout_s: float = 60.0) -> tuple[int, bytes, bytes]:
        """A short helper script as root with its output captured (small outputs only)."""
        pid = self.spawn(["/bin/sh", "-c", script, "sh", *args], _base_env(), capture=True)
        status = self.wait(pid, time.monotonic() + timeout_s)
        out = base64.b64decode(status.get("out-data", ""))
        err = base64.b64decode(status.get("err-data", ""))
        return _exit_code(status), out, err

    def open(self, path: str, mode: str) -> int:
        return int(self.call("guest-file-open", {"path": path, "mode": mode}))

    def read(self, handle: int, count: int = CHUNK) -> bytes:
        reply = self.call("guest-file-read", {"handle": handle, "count": count})
        return base64.b64decode(reply.get("buf-b64", "")) if reply.get("count") else b""

    def write(self, handle: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            piece = base64.b64encode(view[:WRITE_CHUNK]).decode()
            reply = self.call("guest-file-write", {"handle": handle, "buf-b64": piece})
            written = int(reply.get("count", 0))
            if written <= 0:
                raise ConflictError(f"the guest agent of '{self.name}' wrote nothing (guest disk full?)")
            view = view[written:]

    def close(self, handle: int) -> None:
        with contextlib.suppress(Exception):
            self.call("guest-file-close", {"handle": handle})


T = TypeVar("T")


def _patiently(call: Callable[[], T]) -> T:
    """Retry while the agent is busy (a loaded TCG guest misses libvirt's 5 s guest-sync now and
    then, measured). libvirt says the same when the command itself timed out, so only a failure
    well before AGENT_TIMEOUT_S counts: the command was never sent, retrying cannot run it twice."""
    deadline = time.monotonic() + BUSY_RETRY_S
    pause = threading.Event()
    while True:
        started = time.monotonic()
        try:
            return call()
        except AgentUnavailableError as error:
            in_sync = time.monotonic() - started < SYNC_LIMIT_S
            if not (error.busy and in_sync) or time.monotonic() > deadline:
                raise
        pause.wait(0.5)


def _base_env(home: str = "/root") -> list[str]:
    return [f"PATH={GUEST_PATH}", f"HOME={home}", "LANG=C.UTF-8"]


def _exit_code(status: dict[str, Any]) -> int:
    if "signal" in status:
        return 128 + int(status["signal"])
    return int(status.get("exitcode", 0))


# ---------------------------------------------------------------------------------------------
# the agent is missing: one line, and what to use instead


@contextlib.contextmanager
def _agent_needed(dom: Domain, operation: str) -> Iterator[None]:
    try:
        yield
    except AgentUnavailableError as error:
        raise AgentUnavailableError(
            f"{error.message}: {operation} cannot run in it", hint=f"use {fallback(dom)}"
        ) from None


def fallback(dom: Domain) -> str:
    """SSH when the guest answers on port 22, else its serial console."""
    user = dom.metadata().get("user") or "root"
    with contextlib.suppress(VirtainerError):
        for address in dom.addresses():
            if ssh_banner(address.address):
                return f"SSH: ssh {user}@{address.address}, or virtainer ssh {dom.name}"
    return f"the serial console: virtainer console {dom.name}"
