"""The API's JSON shapes (pydantic), and their conversion from the core's dataclasses.

No FastAPI here: the CLI prints the same shapes when it works against local libvirt.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from virtainer import machine, snapshots
from virtainer.spec import STAGES

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63, examples=["vm"])]


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


class Health(Model):
    status: Literal["ok"]
    libvirt: bool


class Ready(Model):
    ready: Literal[True]
    vm: str | None
    stages: list[Stage]


def vm_public(status: machine.VmStatus, wanted: tuple[str, ...], operation: str | None) -> VmPublic:
    stages = [Stage(**vars(record)) for record in status.stages]
    reached = {stage.stage for stage in stages}
    running = status.state.value == "running"
    base = status.base
    return VmPublic(
        name=status.name,
        state=status.state.value,
        accelerator=status.accelerator,
        accelerator_reason=status.accelerator_reason,
        vcpus=status.vcpus,
        memory_mib=status.memory_mib,
        addresses=[Address(**vars(address)) for address in status.addresses],
        readiness=Readiness(
            ready=running and all(stage in reached for stage in wanted),
            wanted=[stage for stage in STAGES if stage in wanted],
            stages=stages,
        ),
        diff=Diff(
            path=status.diff_path,
            base=BaseImage(**vars(base.identity), path=base.path) if base else None,
        ),
        operation=operation,
    )


def snapshot_public(snapshot: snapshots.Snapshot) -> SnapshotPublic:
    fields = snapshots.as_dict(snapshot)
    fields.pop("hardware", None)
    return SnapshotPublic.model_validate(fields)


def revert_public(result: snapshots.RevertResult) -> RevertResult:
    return RevertResult(snapshot=snapshot_public(result.snapshot), state=result.state.value, elapsed_s=result.elapsed_s)
