"""The whole lifecycle over HTTP on the tiny guest: status, stop, start, reboot, snapshots
(disk and memory, running and stopped), revert, delete, destroy, and the event stream."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ApiServer, TinyVm
from tests.waiting import wait_until

pytestmark = pytest.mark.guest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_status_shows_state_resources_readiness_and_diff(api: ApiServer, tiny_vm: TinyVm) -> None:
    with api.client() as http:
        listed = http.get("/v1/vms").json()
        one = http.get(f"/v1/vms/{tiny_vm.name}").json()
    assert [vm["name"] for vm in listed] == [tiny_vm.name]
    assert one["state"] == "running"
    assert one["accelerator"] in ("tcg", "kvm") and one["accelerator_reason"]
    assert (one["vcpus"], one["memory_mib"]) == (1, 256)
    assert one["readiness"]["ready"] is True
    assert [stage["stage"] for stage in one["readiness"]["stages"]] == ["running"]
    assert one["diff"]["path"] == str(tiny_vm.spec.diff_path)
    assert one["diff"]["base"]["sha256"] == sha256(tiny_vm.guest.base_image)
    assert one["operation"] is None


def test_whole_lifecycle(api: ApiServer, tiny_vm: TinyVm) -> None:
    name, base = tiny_vm.name, tiny_vm.guest.base_image
    base_before = sha256(base)
    with api.client() as http:
        vm = f"/v1/vms/{name}"
        boots = tiny_vm.boots()

        stopped = ok(http.post(f"{vm}/stop", json={"timeout_s": 60}))
        assert (stopped["state"], stopped["method"], stopped["graceful"]) == ("shut-off", "acpi", True)
        assert "GUEST-ACPI-POWER-BUTTON" in tiny_vm.serial_log
        assert http.get(vm).json()["state"] == "shut-off"
        assert http.post(f"{vm}/stop").status_code == 409

        # a disk snapshot of the stopped VM, then one more boot on the disk
        offline = ok(http.post(f"{vm}/snapshots", json={"name": "offline", "description": "stopped <&>"}), 201)
        assert (offline["kind"], offline["vm_state"], offline["description"]) == ("disk", "shut-off", "stopped <&>")
        started = ok(http.post(f"{vm}/start"))
        assert started["state"] == "running"
        assert http.post(f"{vm}/start").status_code == 409
        wait_until(lambda: tiny_vm.boots() == boots + 1, 60, "the boot counter to advance")

        # disk snapshot of the running VM (no agent in this guest: not quiesced), then memory
        live = ok(http.post(f"{vm}/snapshots", json={"name": "live-disk"}), 201)
        assert (live["kind"], live["vm_state"], live["quiesced"], live["current"]) == ("disk", "running", False, True)
        memory = ok(http.post(f"{vm}/snapshots", json={"name": "live-mem", "kind": "memory"}), 201)
        assert memory["kind"] == "memory" and memory["parent"] == "live-disk"
        names = [snap["name"] for snap in ok(http.get(f"{vm}/snapshots"))]
        assert names == ["offline", "live-disk", "live-mem"]
        assert http.post(f"{vm}/snapshots", json={"name": "live-mem"}).status_code == 409

        # reverting the running VM to the offline disk snapshot restarts it on that disk:
        # the boot counter is back to what the disk held then, plus this boot
        printed = tiny_vm.serial_log.count("GUEST-DISK-BOOTS=")
        reverted = ok(http.post(f"{vm}/snapshots/offline/revert"))
        assert (reverted["state"], reverted["snapshot"]["current"]) == ("running", True)
        wait_until(lambda: tiny_vm.serial_log.count("GUEST-DISK-BOOTS=") > printed, 60, "the boot after the revert")
        assert tiny_vm.boots() == boots + 1  # not boots + 2: the disk went back to before the last boot

        # a memory snapshot resumes the VM where it was, running
        resumed = ok(http.post(f"{vm}/snapshots/live-mem/revert"))
        assert resumed["state"] == "running" and resumed["snapshot"]["kind"] == "memory"

        rebooted = ok(http.post(f"{vm}/reboot"))
        assert (rebooted["method"], rebooted["state"]) == ("acpi", "running")

        destroyed = ok(http.post(f"{vm}/destroy"))
        assert destroyed["state"] == "shut-off"
        assert http.post(f"{vm}/destroy").status_code == 409
        assert http.post(f"{vm}/snapshots", json={"kind": "memory"}).status_code == 409

        # a stopped VM reverts to a disk snapshot and stays stopped
        assert ok(http.post(f"{vm}/snapshots/live-disk/revert"))["state"] == "shut-off"

        for snapshot in ("offline", "live-disk", "live-mem"):
            assert http.delete(f"{vm}/snapshots/{snapshot}").status_code == 204
            assert http.get(f"{vm}/snapshots/{snapshot}").status_code == 404
        assert ok(http.get(f"{vm}/snapshots")) == []
        assert not list(Path(str(tiny_vm.spec.diff_path) + ".snapshots").glob("*.xml"))
        ok(http.post(f"{vm}/start"))
    assert sha256(base) == base_before  # nothing of this ever wrote the base


def test_event_stream_reports_operations_and_lifecycle(api: ApiServer, tiny_vm: TinyVm) -> None:
    events: list[dict[str, object]] = []
    connected = threading.Event()

    def listen() -> None:
        query = {"vm": tiny_vm.name}
        with api.client(timeout=60) as http, http.stream("GET", "/v1/events", params=query) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                connected.set()
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                # libvirt's lifecycle event and the operation's end come by different paths, in
                # either order: listen until both are there (the join below bounds it)
                start_done = any(event.get("phase") == "done" and event.get("operation") == "start" for event in events)
                started = any(event["type"] == "lifecycle" and event.get("event") == "started" for event in events)
                if start_done and started:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    ready_lines = tiny_vm.serial_log.count("GUEST-READY")
    with api.client() as http:
        ok(http.post(f"/v1/vms/{tiny_vm.name}/destroy"))
        ok(http.post(f"/v1/vms/{tiny_vm.name}/start"))
    listener.join(30)
    # the next test stops it with ACPI: this boot must get as far as acpid first
    wait_until(lambda: tiny_vm.serial_log.count("GUEST-READY") > ready_lines, 60, "the new boot's GUEST-READY")
    seen = [(event["type"], event.get("operation") or event.get("event")) for event in events]
    assert ("operation", "destroy") in seen
    assert ("lifecycle", "stopped") in seen
    assert ("lifecycle", "started") in seen
    assert ("operation", "start") in seen
    assert all(event["vm"] == tiny_vm.name for event in events)


def test_cli_mirror_against_the_api_and_local_libvirt(api: ApiServer, tiny_vm: TinyVm) -> None:
    import subprocess

    from tests.api.conftest import VIRTAINER

    remote = ["--api", api.url, "--token", api.token]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VIRTAINER, *args], capture_output=True, text=True, timeout=120, check=False)

    made = cli("snapshot", "create", tiny_vm.name, "--name", "from-cli", *remote, "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["name"] == "from-cli"
    local = cli("snapshot", "list", tiny_vm.name)  # local libvirt sees what the API made
    assert "from-cli" in local.stdout
    assert cli("snapshot", "create", tiny_vm.name, "--name", "from-cli", *remote).returncode == 4  # conflict
    assert cli("snapshot", "list", "no-such-vm", *remote).returncode == 5
    refused = cli("snapshot", "list", tiny_vm.name, "--api", api.url, "--token", "wrong")  # reads need it too
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "token" in refused.stderr
    assert cli("snapshot", "delete", tiny_vm.name, "from-cli", "--api", api.url, "--token", "wrong").returncode == 1
    assert cli("snapshot", "delete", tiny_vm.name, "from-cli").returncode == 0  # local
    assert "from-cli" not in cli("snapshot", "list", tiny_vm.name, *remote).stdout
    wait_until(tiny_vm.booted, 60, "the guest to finish booting (acpid up)")
    assert cli("stop", tiny_vm.name, *remote).returncode == 0
    started = cli("start", tiny_vm.name)
    assert started.returncode == 0 and "now running" in started.stdout


def ok(response: httpx.Response, status: int = 200) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()  # type: ignore[no-any-return]
