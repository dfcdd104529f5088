"""Readiness as named stages with timestamps: running -> ip -> agent -> cloud-init -> ssh.

The wait polls about once a second with a deadline. Faster polling was measured to slow the boot
itself under TCG: every probe steals CPU time from the emulator. The domain's events spare the
questions whose answers they give (is it still running, is an agent there).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virtainer import guest
from virtainer.errors import HypervisorError, VirtainerError, WaitTimeout, one_line
from virtainer.guest.ssh import SSH_PORT, ssh_banner
from virtainer.hypervisor import Domain, DomainState, DomainWatch
from virtainer.stages import Stage, in_order, missing_stages

POLL_INTERVAL_S = 1.0
EXEC_PROBE_TIMEOUT_S = 30.0  # one attempt of the exec stage's command
CLOUD_INIT_RESULT = "/run/cloud-init/result.json"  # written when cloud-init's final stage is done
CLOUD_INIT_RESULT_MAX = 1 << 20  # the guest writes it: read no more than this
AGENT_READ_CHUNK = 65536


class StageFailed(VirtainerError):
    """A stage can never be reached: what the guest reported makes no sense."""


@dataclass(frozen=True)
class StageRecord:
    stage: Stage
    at: float  # Unix time
    elapsed_s: float  # since the domain was started
    detail: str = ""


@dataclass
class Readiness:
    started_at: float
    wanted: tuple[Stage, ...]
    reached: dict[str, StageRecord] = field(default_factory=dict)
    address: str | None = None
    ready_command: str | None = None  # the exec stage's probe

    @property
    def missing(self) -> list[str]:
        return missing_stages(self.wanted, self.reached)

    @property
    def ready(self) -> bool:
        return not self.missing

    def records(self) -> list[StageRecord]:
        return [self.reached[stage] for stage in in_order(self.reached)]

    def to_json(self) -> str:
        data = {
            "started_at": self.started_at,
            "wanted": list(self.wanted),
            "address": self.address,
            "ready_command": self.ready_command,
            "stages": [asdict(record) for record in self.records()],
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> Readiness | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        readiness = cls(
            data["started_at"],
            tuple(data["wanted"]),
            address=data.get("address"),
            ready_command=data.get("ready_command"),
        )
        for item in data["stages"]:
            readiness.reached[item["stage"]] = StageRecord(**item)
        return readiness


OnStage = Callable[[StageRecord], None]


class ReadinessProbe:
    """Checks each stage against the live guest; one instance per wait, on one domain handle.

    With the domain's events (`watch`), it asks libvirt for the state only after a lifecycle
    event, and asks the guest agent nothing while its port is closed: each of those questions
    was a round trip every second of the boot."""

    def __init__(self, dom: Domain, watch: DomainWatch | None = None) -> None:
        self.dom = dom
        self.name = dom.name
        self.watch = watch or DomainWatch(following=False)
        self._state: DomainState | None = None

    def running(self) -> str | None:
        if self.watch.take_state_change() or self._state is None:
            self._state = self.dom.state()
        state = self._state
        if not state.active:
            raise HypervisorError(f"VM '{self.name}' stopped while booting (state {state.value})")
        return "" if state == DomainState.RUNNING else None

    @property
    def agent_may_answer(self) -> bool:
        return self.watch.agent_connected is not False

    def ip(self) -> str | None:
        addresses = self.dom.addresses(agent=self.agent_may_answer)
        return f"{addresses[0].address} ({addresses[0].source})" if addresses else None

    def agent(self) -> str | None:
        """Reached when the agent answers; the detail records its version."""
        if not self.agent_may_answer:
            return None
        try:
            reply = self.dom.agent_command({"execute": "guest-info"}, timeout_s=1)
        except HypervisorError:
            return None
        version = reply.get("version") if isinstance(reply, dict) else None
        return f"qemu-ga {version}" if version else ""

    def cloud_init(self) -> str | None:
        """Done when cloud-init wrote its result file; its errors are reported, not fatal.

        The file comes from the guest: whatever it holds, this returns or raises StageFailed."""
        if not self.agent_may_answer:
            return None
        try:
            handle = self.dom.agent_command({"execute": "guest-file-open", "arguments": {"path": CLOUD_INIT_RESULT}})
        except HypervisorError:
            return None
        if not isinstance(handle, int) or isinstance(handle, bool):
            raise StageFailed(f"cloud-init stage failed: the guest agent answered {one_line(repr(handle))[:80]} "
                              "for an open file")  # fmt: skip
        try:
            content = self._read_all(handle)
        except HypervisorError:
            return None  # the agent went away meanwhile: try again on the next poll
        finally:
            with contextlib.suppress(HypervisorError):
                self.dom.agent_command({"execute": "guest-file-close", "arguments": {"handle": handle}})
        return cloud_init_outcome(content)

    def _read_all(self, handle: int) -> bytes:
        content = bytearray()
        while len(content) <= CLOUD_INIT_RESULT_MAX:
            chunk = self.dom.agent_command(
                {"execute": "guest-file-read", "arguments": {"handle": handle, "count": AGENT_READ_CHUNK}}
            )
            if not isinstance(chunk, dict):
                raise StageFailed("cloud-init stage failed: the guest agent's read answer is not an object")
            try:
                content += base64.b64decode(str(chunk.get("buf-b64", "")), validate=True)
            except ValueError:
                raise StageFailed("cloud-init stage failed: the guest agent sent invalid base64") from None
            if chunk.get("eof", True) or not chunk.get("count"):
                return bytes(content)
        raise StageFailed(f"cloud-init stage failed: {CLOUD_INIT_RESULT} is larger than {CLOUD_INIT_RESULT_MAX} bytes")

    def exec_probe(self, command: str) -> str | None:
        """The user's own probe: reached when `sh -c command` exits 0 in the guest."""
        request = guest.ExecRequest(("/bin/sh", "-c", command), timeout_s=EXEC_PROBE_TIMEOUT_S)
        try:
            done = guest.run_captured(self.dom, request)
        except HypervisorError:
            return None
        return f"exit 0 in {done.result.elapsed_s:.1f} s" if done.result.exit_code == 0 else None

    ssh = staticmethod(ssh_banner)


def cloud_init_outcome(content: bytes) -> str:
    """What cloud-init's result.json says: "done", or "done with errors: ...".

    Its shape: {"v1": {"datasource": ..., "errors": [...]}}. Anything else is StageFailed, with
    the reason: the guest wrote it, so it may be anything at all."""
    try:
        result = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        why = one_line(str(error))[:120]
        raise StageFailed(f"cloud-init stage failed: {CLOUD_INIT_RESULT} is not JSON ({why})") from None
    v1 = result.get("v1") if isinstance(result, dict) else None
    errors = v1.get("errors", []) if isinstance(v1, dict) else None
    if not isinstance(errors, list):
        raise StageFailed(f'cloud-init stage failed: {CLOUD_INIT_RESULT} has no {{"v1": {{"errors": [...]}}}}')
    if not errors:
        return "done"
    shown = one_line("; ".join(error if isinstance(error, str) else json.dumps(error)[:200] for error in errors[:10]))
    return f"done with errors: {shown[:500]}"


def wait_until_ready(
    dom: Domain,
    readiness: Readiness,
    *,
    timeout_s: float,
    on_stage: OnStage | None = None,
    stop: threading.Event | None = None,
    ssh_endpoint: tuple[str, int] | None = None,
) -> Readiness:
    """Poll the wanted stages until all are reached, the deadline passes, or `stop` is set.

    ssh_endpoint: where the guest's SSH answers when not at its address (user-mode networking:
    a forwarded port on this host)."""
    deadline = time.monotonic() + timeout_s
    stop = stop or threading.Event()
    with dom.watch() as watch:
        probe = ReadinessProbe(dom, watch)
        while True:
            _check_pending(probe, readiness, on_stage, ssh_endpoint)
            if readiness.ready or stop.is_set():
                return readiness
            if time.monotonic() >= deadline:
                missing = ", ".join(readiness.missing)
                raise WaitTimeout(
                    f"VM '{dom.name}' not ready after {timeout_s:.0f} s: still waiting for {missing}",
                    hint="see the serial log (virtainer console, or the log file in the state directory)",
                )
            stop.wait(POLL_INTERVAL_S)


def _check_pending(
    probe: ReadinessProbe, readiness: Readiness, on_stage: OnStage | None, ssh_endpoint: tuple[str, int] | None
) -> None:
    def reach(stage: Stage, detail: str) -> None:
        now = time.time()
        record = StageRecord(stage, now, round(now - readiness.started_at, 2), detail)
        readiness.reached[stage] = record
        if on_stage:
            on_stage(record)

    pending = readiness.missing
    if "running" in pending and (detail := probe.running()) is not None:
        reach("running", detail)
    elif "running" not in readiness.reached:
        return
    else:
        probe.running()  # raises if the guest died meanwhile
    if "ip" in pending and (detail := probe.ip()) is not None:
        readiness.address = detail.split()[0]
        reach("ip", detail)
    if "agent" in pending and (detail := probe.agent()) is not None:
        reach("agent", detail)
    agent_known = "agent" in readiness.reached or "agent" not in readiness.wanted
    if "cloud-init" in pending and agent_known and (detail := probe.cloud_init()):
        reach("cloud-init", detail)
    endpoint = ssh_endpoint or ((readiness.address, SSH_PORT) if readiness.address else None)
    if "ssh" in pending and endpoint and (detail := probe.ssh(*endpoint)):
        reach("ssh", detail)
    others_done = all(stage in readiness.reached for stage in readiness.wanted if stage != "exec")
    command = readiness.ready_command
    if "exec" in pending and others_done and command and (detail := probe.exec_probe(command)):
        reach("exec", detail)
