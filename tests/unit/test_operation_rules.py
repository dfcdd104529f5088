"""The operations' state rules and result shapes, on libvirt's test driver (no daemon, no root).

test:///default holds one running domain, `test`; its state lives as long as a connection to it
is open in this process, so the CLI's own connection sees what the fixture's did.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from virtainer import cli, guest, operations, readiness
from virtainer.api import models
from virtainer.errors import ConflictError, NotFoundError
from virtainer.hypervisor import Hypervisor, InterfaceAddress

TEST_URI = "test:///default"


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    """Each test finds `test` running, as the driver starts it. The driver resets only when its
    last connection is gone, and a closed connection can outlive its close() while libvirt's event
    loop thread still holds it for a deregistered callback (seen under load): so the fixture puts
    `test` back itself instead of relying on the reset."""
    with Hypervisor(TEST_URI) as connection:
        _running(connection)
        yield connection
        _running(connection)


def _running(hv: Hypervisor) -> None:
    if not hv.state("test").active:
        hv.domain("test").start()


def test_start_of_a_running_vm_is_a_conflict(hv: Hypervisor) -> None:
    with pytest.raises(ConflictError, match="already running"):
        operations.start(hv, "test")


@pytest.mark.parametrize("operation", ["stop", "reboot", "destroy"])
def test_power_operations_on_a_stopped_vm_are_conflicts(hv: Hypervisor, operation: str) -> None:
    calls = {
        "stop": lambda: operations.stop(hv, "test", 5),
        "reboot": lambda: operations.reboot(hv, "test"),
        "destroy": lambda: operations.destroy(hv, "test"),
    }
    operations.destroy(hv, "test")
    with pytest.raises(ConflictError, match=f"cannot {operation} VM 'test': it is shut-off"):
        calls[operation]()


def test_each_operation_of_an_unknown_vm_is_not_found(hv: Hypervisor) -> None:
    calls = [
        lambda: operations.status(hv, "nope"),
        lambda: operations.start(hv, "nope"),
        lambda: operations.stop(hv, "nope", 5),
        lambda: operations.reboot(hv, "nope"),
        lambda: operations.destroy(hv, "nope"),
        lambda: operations.list_snapshots(hv, "nope"),
        lambda: operations.create_snapshot(hv, "nope", None),
        lambda: operations.revert_snapshot(hv, "nope", "snap"),
        lambda: operations.delete_snapshot(hv, "nope", "snap"),
    ]
    for call in calls:
        with pytest.raises(NotFoundError, match="no VM named 'nope'"):
            call()


def test_results_say_where_they_left_the_vm(hv: Hypervisor) -> None:
    destroyed = operations.destroy(hv, "test")
    assert (destroyed.operation, destroyed.state, destroyed.method) == ("destroy", "shut-off", "destroy")
    started = operations.start(hv, "test")
    assert (started.state, started.method, started.graceful) == ("running", None, None)
    stopped = operations.stop(hv, "test", 5)
    assert stopped.state == "shut-off" and stopped.method in ("agent", "acpi", "destroy")
    assert stopped.graceful is (stopped.method != "destroy")


def test_status_is_one_shape_for_the_cli_and_the_api(hv: Hypervisor, capsys: pytest.CaptureFixture[str]) -> None:
    status = operations.status(hv, "test")
    shape = operations.as_dict(status)
    assert models.vm_public(status).model_dump() == shape  # the API's JSON
    assert cli.main(["-c", TEST_URI, "status", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == shape  # the CLI's JSON
    assert (shape["state"], shape["readiness"], shape["diff"]) == (
        "running", {"ready": False, "wanted": ["running"], "stages": []}, {"path": "", "base": None},
    )  # fmt: skip


def test_an_operation_result_is_the_apis(hv: Hypervisor) -> None:
    result = operations.destroy(hv, "test")
    assert models.operation_public(result).model_dump() == operations.as_dict(result)


def test_cli_down_and_destroy_of_a_stopped_vm_are_conflicts(hv: Hypervisor, capsys: pytest.CaptureFixture[str]) -> None:
    operations.destroy(hv, "test")
    assert cli.main(["-c", TEST_URI, "down", "test"]) == 4
    assert cli.main(["-c", TEST_URI, "destroy", "test"]) == 4
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "virtainer: error: cannot stop VM 'test': it is shut-off (start it first)",
        "virtainer: error: cannot destroy VM 'test': it is shut-off (start it first)",
    ]


# the API's models and the core's dataclasses they are made from: the same fields, all the way down
SAME_FIELDS = [
    (models.VmPublic, operations.VmStatus),
    (models.Readiness, operations.VmReadiness),
    (models.Stage, readiness.StageRecord),
    (models.Diff, operations.VmDiff),
    (models.BaseImage, operations.DiffBase),
    (models.Address, InterfaceAddress),
    (models.GuestFacts, guest.GuestFacts),
    (models.GuestUser, guest.GuestUser),
    (models.GuestFilesystem, guest.GuestFilesystem),
    (models.GuestInterface, guest.GuestInterface),
    (models.OperationResult, operations.OperationResult),
]


@pytest.mark.parametrize(("model", "core"), SAME_FIELDS, ids=lambda item: item.__name__)
def test_the_api_models_have_the_cores_fields(model: type[pydantic.BaseModel], core: Any) -> None:
    assert list(model.model_fields) == [field.name for field in dataclasses.fields(core)]


def test_stop_and_down_are_one_operation_in_one_wording(hv: Hypervisor, capsys: pytest.CaptureFixture[str]) -> None:
    said = {}
    for command in ("stop", "down"):
        code = cli.main(["-c", TEST_URI, command, "test", "--timeout", "1"])
        said[command] = (code, re.sub(r"\d+\.\d s\)", "T s)", capsys.readouterr().out))
        assert cli.main(["-c", TEST_URI, "start", "test"]) == 0
        capsys.readouterr()
    assert said["stop"] == said["down"], said
    assert said["stop"] in {  # the test driver may refuse ACPI's power button: then it is destroyed
        (0, "VM 'test' is off (ACPI power button, T s)\n"),
        (3, "VM 'test' did not power off within 1 s and was destroyed\n"),
    }
    assert cli.main(["-c", TEST_URI, "down", "test", "--json", "--timeout", "1"]) in (0, 3)
    assert json.loads(capsys.readouterr().out)["operation"] == "stop"
