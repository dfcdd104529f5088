"""The API's JSON shapes (pydantic), and their conversion from the core's dataclasses.

VmPublic and OperationResult have exactly the fields of virtainer.operations' VmStatus and
OperationResult (tests/unit/test_operation_rules.py checks it): the CLI's JSON is the API's.

No FastAPI here: the CLI prints the same shapes when it works against local libvirt.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from virtainer import guest, operations, snapshots
from virtainer.validators import NAME_MAX_LENGTH, PASSWORD_MAX, PASSWORD_MIN
from virtainer.validators import NAME_PATTERN as NAME_PATTERN  # re-exported: routes import it from here

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH, examples=["vm"])]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorDetail(Model):
    code: str = Field(examples=["not_found"])
    message: str
    hint: str | None = None


class ErrorBody(Model):
    error: ErrorDetail


class Address(Model):
    mac: str
    address: str
    prefix: int
    source: str


class Stage(Model):
    stage: str
    at: float
    elapsed_s: float
    detail: str


class Readiness(Model):
    ready: bool
    wanted: list[str]
    stages: list[Stage]


class BaseImage(Model):
    sha256: str
    virtual_size: int
    format: str
    path: str


class Diff(Model):
    path: str
    base: BaseImage | None


class GuestUser(Model):
    name: str
    domain: str
    login_time: float | None


class GuestFilesystem(Model):
    mountpoint: str
    device: str
    fstype: str
    total_bytes: int | None
    used_bytes: int | None


class GuestInterface(Model):
    name: str
    mac: str
    addresses: list[str] = Field(description="address/prefix, IPv4 and IPv6, as the guest sees them")


class GuestFacts(Model):
    """What the QEMU guest agent reports; null in a VM status when no agent answers."""

    agent_version: str
    os_id: str
    os_name: str
    os_version: str
    os_version_id: str
    os_pretty_name: str
    kernel_release: str
    kernel_version: str
    machine: str
    hostname: str
    timezone: str
    timezone_offset_s: int | None
    users: list[GuestUser]
    filesystems: list[GuestFilesystem]
    interfaces: list[GuestInterface]


class VmPublic(Model):
    name: str
    state: str
    accelerator: str
    accelerator_reason: str
    vcpus: int
    memory_mib: int
    addresses: list[Address]
    readiness: Readiness
    diff: Diff
    operation: str | None = Field(None, description="the operation in progress, if any")
    guest: GuestFacts | None = Field(None, description="the guest agent's facts (refreshed every few seconds)")


class StopRequest(Model):
    timeout_s: float = Field(60.0, gt=0, le=3600, description="graceful stop budget before destroy")


class OperationResult(Model):
    vm: str
    operation: str
    state: str
    elapsed_s: float
    method: str | None = Field(None, description="stop/reboot: agent, acpi or destroy")
    graceful: bool | None = Field(None, description="stop: false when the timeout forced it")


class SnapshotCreate(Model):
    name: Name | None = Field(None, description="default: snap-YYYYmmdd-HHMMSS (UTC)")
    kind: Literal["disk", "memory"] = "disk"
    description: str = Field("", max_length=1000)


class SnapshotPublic(Model):
    name: str
    kind: Literal["disk", "memory"]
    created_at: float
    description: str
    vm_state: str
    parent: str | None
    current: bool
    quiesced: bool


class RevertResult(Model):
    snapshot: SnapshotPublic
    state: str
    elapsed_s: float


GuestUserName = Annotated[str, Field(pattern=guest.USER_NAME.pattern, max_length=33, examples=["debian"])]
EnvItem = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*=[^\x00]*$", max_length=65536)]


class ExecRequest(Model):
    command: list[Annotated[str, Field(max_length=131072)]] = Field(
        min_length=1, max_length=4096, examples=[["sh", "-c", "echo out; echo err >&2; exit 3"]]
    )
    user: GuestUserName | None = Field(None, description="default root")
    env: list[EnvItem] = Field(default_factory=list, max_length=1024, examples=[["GREETING=hello"]])
    workdir: str | None = Field(None, max_length=4096)
    timeout_s: float | None = Field(None, gt=0, le=7 * 86400, description="killed in the guest then")
    stdin_b64: str | None = Field(None, description="base64 of what the command reads on stdin")

    def core(self) -> guest.ExecRequest:
        return guest.ExecRequest(tuple(self.command), self.user, tuple(self.env), self.timeout_s, self.workdir)


class ExecResult(Model):
    exit_code: int = Field(description="the command's, or 128+N when signal N ended it (as runc)")
    signal: int | None
    timed_out: bool
    elapsed_s: float


class ExecOutput(ExecResult):
    stdout_b64: str
    stderr_b64: str
    stdout: str | None = Field(description="stdout as text when it is UTF-8, else null")
    stderr: str | None


class KeysChange(Model):
    user: GuestUserName | None = Field(None, description="default the VM's cloud-init user")
    keys: list[Annotated[str, Field(max_length=16384)]] = Field(min_length=1, max_length=256)


class KeysList(Model):
    user: str
    keys: list[str]


class PasswordRequest(Model):
    user: GuestUserName | None = Field(None, description="default the VM's cloud-init user")
    password: str | None = Field(
        None, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, description="default: random, returned once"
    )


class PasswordResult(Model):
    user: str
    password: str | None = Field(description="the generated password (only when none was given)")


class Health(Model):
    status: Literal["ok"]
    libvirt: bool


class Ready(Model):
    ready: Literal[True]
    vm: str | None
    stages: list[Stage]


def vm_public(status: operations.VmStatus) -> VmPublic:
    return VmPublic.model_validate(operations.as_dict(status))


def operation_public(result: operations.OperationResult) -> OperationResult:
    return OperationResult.model_validate(operations.as_dict(result))


def guest_facts_public(facts: guest.GuestFacts) -> GuestFacts:
    return GuestFacts.model_validate(dataclasses.asdict(facts))


def exec_result_public(result: guest.ExecResult) -> ExecResult:
    return ExecResult.model_validate(dataclasses.asdict(result))


def exec_output_public(done: guest.CapturedExec) -> ExecOutput:
    def text(data: bytes) -> str | None:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return None

    return ExecOutput(
        **dataclasses.asdict(done.result),
        stdout_b64=base64.b64encode(done.stdout).decode(),
        stderr_b64=base64.b64encode(done.stderr).decode(),
        stdout=text(done.stdout),
        stderr=text(done.stderr),
    )


def snapshot_public(snapshot: snapshots.Snapshot) -> SnapshotPublic:
    fields = snapshots.as_dict(snapshot)
    fields.pop("hardware", None)
    return SnapshotPublic.model_validate(fields)


def revert_public(result: snapshots.RevertResult) -> RevertResult:
    return RevertResult(snapshot=snapshot_public(result.snapshot), state=result.state.value, elapsed_s=result.elapsed_s)


CoreResult = operations.OperationResult | snapshots.Snapshot | snapshots.RevertResult


def public(result: CoreResult) -> Model:
    """The API's shape of an operation's result (the CLI's --json prints the same)."""
    if isinstance(result, operations.OperationResult):
        return operation_public(result)
    if isinstance(result, snapshots.Snapshot):
        return snapshot_public(result)
    return revert_public(result)
