"""Snapshots survive container replacement: snapshot through the API of one `docker run`, remove
the container, start a new one on the same volume: `list` shows the same snapshots and `revert`
works (disk and memory). Uses the container tests' images and helpers (tests/container/)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.container.conftest import generic_build, generic_image, new_volume, tiny, tiny_options
from tests.container.docker import Container, start
from tests.guests import TinyGuest
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
