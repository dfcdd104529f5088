"""Snapshots survive container replacement: snapshot through the API of one `docker run`, remove
the container, start a new one on the same volume: `list` shows the same snapshots and `revert`
works (disk and memory). Uses the container tests' images and helpers (tests/container/)."""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.container.conftest import generic_build, generic_image, new_volume, tiny, tiny_options
from tests.container.docker import Container, start
from tests.guests import TinyGuest
from tests.tiny_vm import assert_clean_qcow2
from tests.waiting import wait_until

pytestmark = [pytest.mark.guest, pytest.mark.container]
__all__ = ["generic_build", "generic_image", "tiny"]  # fixtures used from tests/container
API_PORT = 8470


@pytest.fixture
def snapshot_volume() -> Iterator[Path]:
    path = new_volume("api-snapshots")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_vm(image: str, guest: TinyGuest, volume: Path, token: str) -> tuple[Container, httpx.Client]:
    # no NIC: the guest needs no network for this, and the container needs no extra flags
    options = tiny_options(guest, volume, VIRTAINER_API_TOKEN=token, VIRTAINER_NETWORK="none")
    container = start(image, "api-snap", **options)  # type: ignore[arg-type]
    found = container.wait_log(r"REST API (on|unavailable|not started).*", timeout_s=180)
    if "on" not in found.group(1):
        container.remove()
        raise AssertionError(f"the image serves no REST API: {found.group(0)}")
    container.wait_log(r"GUEST-READY", timeout_s=120)
    http = httpx.Client(base_url=f"http://{container.ip}:{API_PORT}", headers={"Authorization": f"Bearer {token}"})
    wait_until(lambda: _answers(http), 30, "the API in the container", interval_s=0.5)
    return container, http


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/v1/vms/vm").status_code == 200
    except httpx.HTTPError:
        return False


def test_list_and_revert_after_a_new_docker_run(generic_image: str, tiny: TinyGuest, snapshot_volume: Path) -> None:
    token = "container-" + secrets.token_hex(12)
    first, http = run_vm(generic_image, tiny, snapshot_volume, token)
    try:
        assert http.post("/v1/vms/vm/snapshots", json={"name": "disk-1"}).status_code == 201
        assert http.post("/v1/vms/vm/snapshots", json={"name": "mem-1", "kind": "memory"}).status_code == 201
        before = http.get("/v1/vms/vm/snapshots").json()
        assert first.stop() is not None
    finally:
        http.close()
        first.remove()
    assert sorted(path.name for path in snapshot_volume.glob("*.snapshots/*.xml")) == ["disk-1.xml", "mem-1.xml"]

    second, http = run_vm(generic_image, tiny, snapshot_volume, token)
    try:
        assert second.logs().count("snapshots restored from the volume: disk-1, mem-1") == 1
        assert http.get("/v1/vms/vm/snapshots").json() == before
        for snapshot in ("mem-1", "disk-1"):
            reverted = http.post(f"/v1/vms/vm/snapshots/{snapshot}/revert", timeout=120)
            assert reverted.status_code == 200, reverted.text
            assert reverted.json()["state"] == "running"
        assert second.running()  # a revert's power cycle does not end the container
        assert http.delete("/v1/vms/vm/snapshots/disk-1").status_code == 204

        # a stop through the API leaves the container up; a start makes it healthy again
        assert http.post("/v1/vms/vm/destroy").status_code == 200
        wait_until(lambda: second.exec("test", "-e", "/run/virtainer/ready").returncode != 0, 10, "not ready")
        assert second.running()
        assert http.post("/v1/vms/vm/start").status_code == 200
        wait_until(lambda: second.exec("test", "-e", "/run/virtainer/ready").returncode == 0, 60, "ready again")
        assert second.running()
    finally:
        http.close()
        second.remove()


def _operation(http: httpx.Client) -> str | None:
    operation: str | None = http.get("/v1/vms/vm").json()["operation"]
    return operation


def test_docker_stop_waits_for_a_revert_in_progress(generic_image: str, tiny: TinyGuest, snapshot_volume: Path) -> None:
    """`docker stop` while the API reverts to a memory snapshot: the controller lets the revert
    finish before it shuts the guest down and stops libvirtd; the diff is consistent after."""
    token = "stop-" + secrets.token_hex(12)
    container, http = run_vm(generic_image, tiny, snapshot_volume, token)
    answers: list[httpx.Response | Exception] = []

    def revert() -> None:
        with httpx.Client(base_url=http.base_url, headers=http.headers, timeout=300) as own:
            try:
                answers.append(own.post("/v1/vms/vm/snapshots/mem-1/revert"))
            except httpx.HTTPError as error:
                answers.append(error)

    try:
        memory = {"name": "mem-1", "kind": "memory"}
        assert http.post("/v1/vms/vm/snapshots", json=memory, timeout=300).status_code == 201
        reverting = threading.Thread(target=revert, daemon=True)
        reverting.start()
        wait_until(lambda: _operation(http) == "revert", 60, "the revert to be in progress", interval_s=0.05)
        container.stop(timeout_s=240)
        reverting.join(60)
        logs = container.logs()
        assert answers and isinstance(answers[0], httpx.Response), f"{answers}\n{logs[-2000:]}"
        assert answers[0].status_code == 200, answers[0].text
        assert "waiting for the API's revert to finish" in logs
        assert logs.index("waiting for the API's revert to finish") < logs.index("shutting the guest down")
        assert container.exit_code() in (0, 3), logs[-2000:]  # shut down (or destroyed after the timeout)
    finally:
        http.close()
        container.remove()
    diffs = list(snapshot_volume.glob("*.qcow2"))
    assert diffs, list(snapshot_volume.iterdir())
    for diff in diffs:
        assert_clean_qcow2(diff)
