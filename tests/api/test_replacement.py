"""Snapshots survive the replacement of the domain on the same diff: what happens to libvirt
when a container is removed and a new one starts on the same volume (a new libvirtd state, a new
domain UUID). The snapshot data lives inside the diff; its description beside the diff."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from tests.api.conftest import booted_tiny, serving
from tests.waiting import wait_until
from virtainer import machine, storage
from virtainer.hypervisor import Hypervisor

pytestmark = pytest.mark.guest


def uuid_of(name: str) -> str:
    return subprocess.run(["virsh", "domuuid", name], capture_output=True, text=True, check=True).stdout.strip()


def test_list_and_revert_after_the_domain_is_replaced(module_vm_dir: Path) -> None:
    token = "replace-" + secrets.token_hex(12)
    with booted_tiny(module_vm_dir, prefix="replace") as vm:
        path = f"/v1/vms/{vm.name}"
        with serving(module_vm_dir, vm.name, token=token) as api, api.client() as http:
            assert http.post(f"{path}/snapshots", json={"name": "disk-1", "description": "first"}).status_code == 201
            assert http.post(f"{path}/snapshots", json={"name": "mem-1", "kind": "memory"}).status_code == 201
            assert http.post(f"{path}/snapshots", json={"name": "stale"}).status_code == 201
            before = http.get(f"{path}/snapshots").json()
            boots = vm.boots()
        old_uuid = uuid_of(vm.name)

        # the old container goes away: its libvirt forgets the domain and the snapshots
        with Hypervisor() as hv:
            machine.destroy(hv, vm.name)
            machine.undefine(hv, vm.name)
            assert not hv.exists(vm.name)
        # and one snapshot disappears from the diff behind virtainer's back
        storage.qemu_img("snapshot", "-d", "stale", str(vm.spec.diff_path))

        # the new container: same spec, same volume
        with Hypervisor() as hv:
            machine.up(vm.spec, hv)
        assert uuid_of(vm.name) != old_uuid
        with serving(module_vm_dir, vm.name, token=token) as api, api.client() as http:
            after = http.get(f"{path}/snapshots").json()
            assert after == [snap for snap in before if snap["name"] != "stale"]
            assert [snap["name"] for snap in after] == ["disk-1", "mem-1"]

            wait_until(lambda: vm.boots() == boots + 1, 60, "the new domain's first boot")
            printed = vm.serial_log.count("GUEST-DISK-BOOTS=")
            reverted = http.post(f"{path}/snapshots/disk-1/revert")
            assert reverted.status_code == 200, reverted.text
            wait_until(lambda: vm.serial_log.count("GUEST-DISK-BOOTS=") > printed, 60, "the boot after the revert")
            assert vm.boots() == boots + 1  # not + 2: the disk is back to when disk-1 was taken

            resumed = http.post(f"{path}/snapshots/mem-1/revert")
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["state"] == "running"

            assert http.delete(f"{path}/snapshots/disk-1").status_code == 204
            assert [snap["name"] for snap in http.get(f"{path}/snapshots").json()] == ["mem-1"]
        record = Path(str(vm.spec.diff_path) + ".snapshots")
        assert sorted(item.name for item in record.glob("*.xml")) == ["mem-1.xml", "stale.xml"]
