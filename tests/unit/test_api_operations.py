"""The REST API over the core, through FastAPI's TestClient, on libvirt's in-process test driver:
start, stop, destroy and the snapshot routes with their status codes and error shape. No daemon,
no root, no socket (the fast tier); the real `virtainer serve` on real guests is tests/api."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.unit.driver import TEST_DRIVER, DriverVm, driver_vm
from virtainer import operations, snapshots
from virtainer.api.app import create_app
from virtainer.api.client import RemoteClient
from virtainer.api.settings import ApiSettings
from virtainer.errors import ErrorKind, VirtainerError
from virtainer.hypervisor import DomainState, Hypervisor
from virtainer.readiness import StageRecord

TOKEN = "unit-operations-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[DriverVm]:
    with Hypervisor(TEST_DRIVER) as hv, driver_vm(tmp_path, hv) as made:
        yield made


@pytest.fixture
def client(tmp_path: Path, vm: DriverVm) -> Iterator[TestClient]:
    settings = ApiSettings.build(libvirt_uri=TEST_DRIVER, token=TOKEN, token_file=tmp_path / "token", vms=(vm.name,))
    with TestClient(create_app(settings, announce=lambda _line: None), headers=AUTH) as served:
        yield served


def error_of(reply: object) -> dict[str, str]:
    body = reply.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]  # type: ignore[no-any-return]


def test_status_stop_and_start_through_the_api(client: TestClient, vm: DriverVm) -> None:
    route = f"/v1/vms/{vm.name}"
    status = client.get(route).json()
    assert status["state"] == "running" and status["diff"]["path"] == str(vm.spec.diff_path)
    stopped = client.post(f"{route}/stop", json={"timeout_s": 5})
    assert stopped.status_code == 200 and stopped.json()["state"] == "shut-off"
    assert client.get(route).json()["state"] == "shut-off"  # no stale cached status after the stop
    started = client.post(f"{route}/start")
    assert started.status_code == 200 and started.json()["state"] == "running"


def test_wrong_states_are_409_and_unknown_vms_404(client: TestClient, vm: DriverVm) -> None:
    route = f"/v1/vms/{vm.name}"
    again = client.post(f"{route}/start")
    assert again.status_code == 409 and "already running" in error_of(again)["message"]
    assert client.post(f"{route}/destroy").json()["method"] == "destroy"
    memory = client.post(f"{route}/snapshots", json={"name": "m", "kind": "memory"})
    assert memory.status_code == 409 and "needs a running VM" in error_of(memory)["message"]
    other = client.get("/v1/vms/vt-not-served")  # outside `vms`: as if it did not exist
    assert other.status_code == 404 and error_of(other)["code"]
    assert client.get(f"{route}/snapshots/none-such").status_code == 404


def test_snapshot_routes_create_list_revert_delete(client: TestClient, vm: DriverVm) -> None:
    snapshots = f"/v1/vms/{vm.name}/snapshots"
    created = client.post(snapshots, json={"name": "before", "kind": "memory", "description": "first"})
    assert created.status_code == 201 and created.headers["Location"] == f"{snapshots}/before"
    assert (created.json()["kind"], created.json()["description"]) == ("memory", "first")
    assert client.post(snapshots, json={"name": "before"}).status_code == 409
    assert [found["name"] for found in client.get(snapshots).json()] == ["before"]
    reverted = client.post(f"{snapshots}/before/revert")
    assert reverted.status_code == 200 and reverted.json()["state"] == "running"
    assert client.delete(f"{snapshots}/before").status_code == 204
    assert client.get(snapshots).json() == []
    assert client.get(f"{snapshots}/before").status_code == 404


def test_bad_input_is_422_and_changes_nothing(client: TestClient, vm: DriverVm) -> None:
    snapshots = f"/v1/vms/{vm.name}/snapshots"
    for body in ({"name": "bad name"}, {"kind": "everything"}, {"name": "x" * 300}):
        refused = client.post(snapshots, json=body)
        assert refused.status_code == 422, (body, refused.text)
        assert error_of(refused)["code"]
    assert client.get(snapshots).json() == []
    assert client.get(f"/v1/vms/{vm.name}").json()["state"] == "running"


def test_readyz_names_the_missing_stages(client: TestClient, vm: DriverVm) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200 and [stage["stage"] for stage in ready.json()["stages"]] == ["running"]
    assert client.post(f"/v1/vms/{vm.name}/destroy").status_code == 200
    waiting = client.get("/readyz")
    assert waiting.status_code == 503 and error_of(waiting)["message"].endswith("waiting for: running")


def test_the_remote_client_reads_answers_back_as_the_cores_dataclasses(client: TestClient, vm: DriverVm) -> None:
    remote = RemoteClient("http://testserver", TOKEN)
    remote.http.close()
    remote.http = client  # the API in this process: the same requests, no socket
    (status,) = remote.list_vms()
    assert isinstance(status, operations.VmStatus) and (status.name, status.state) == (vm.name, "running")
    assert isinstance(status.readiness.stages[0], StageRecord) and status.diff.path == str(vm.spec.diff_path)
    created = remote.create_snapshot(vm.name, "remote", "memory", "through the API")
    assert isinstance(created, snapshots.Snapshot) and (created.name, created.description) == (
        "remote",
        "through the API",
    )
    assert [found.name for found in remote.list_snapshots(vm.name)] == ["remote"]
    reverted = remote.revert_snapshot(vm.name, "remote")
    assert isinstance(reverted, snapshots.RevertResult) and reverted.state is DomainState.RUNNING
    remote.delete_snapshot(vm.name, "remote")
    stopped = remote.stop(vm.name, 5)
    assert isinstance(stopped, operations.OperationResult) and (stopped.operation, stopped.state) == (
        "stop",
        "shut-off",
    )
    with pytest.raises(VirtainerError) as refused:
        remote.stop(vm.name, 5)
    assert refused.value.kind is ErrorKind.CONFLICT  # read back from the answer's status and code
