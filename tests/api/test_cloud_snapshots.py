"""Snapshot round trips on the real Debian cloud guest, over the live API (one boot per module).

- disk: write a file over SSH, snapshot (filesystems frozen by the guest agent), delete the file,
  revert: the VM restarts on the snapshot's disk and the file is back.
- disk+memory: a process started over SSH is still running after a revert to the snapshot, even
  though it was killed in between.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import ApiServer, serving
from tests.conftest import forget_domain, unique_name
from tests.guests import cloud_guest
from tests.ssh import SshKey, make_key
from tests.waiting import wait_until
from virtainer import machine
from virtainer.hypervisor import Hypervisor
from virtainer.spec import resolve_spec, settings_from_mapping

pytestmark = [pytest.mark.guest, pytest.mark.cloud]


@dataclass(frozen=True)
class CloudVm:
    name: str
    address: str
    user: str
    key: SshKey
    serial_log: Path

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.key.run(f"{self.user}@{self.address}", command, timeout=timeout)

    def must(self, command: str) -> str:
        done = self.ssh(command)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        return done.stdout.strip()

    def wait_for_ssh(self, timeout_s: float = 480) -> None:
        try:
            wait_until(lambda: self.ssh("true", timeout=20).returncode == 0, timeout_s, "SSH after the revert", 2)
        except AssertionError as error:  # say what the guest was doing: its console's last lines
            tail = self.serial_log.read_text(errors="replace")[-3000:] if self.serial_log.exists() else "(none)"
            raise AssertionError(f"{error}; the guest's serial log ends:\n{tail}") from None


@pytest.fixture(scope="module")
def cloud_vm(module_vm_dir: Path, nat_network: str) -> Iterator[CloudVm]:
    guest = cloud_guest()
    key = make_key(module_vm_dir)
    name = unique_name("apicloud")
    settings = {
        "name": name, "image": str(guest.base_image), "os_variant": "debian12", "ssh_keys": [str(key.public)],
        "vcpus": 2, "memory": "1024M", "network": f"network:{nat_network}",
        "state_dir": str(module_vm_dir / "state"),
        "diff": str(module_vm_dir / "diff.qcow2"), "boot_timeout": 480,
    }  # fmt: skip
    spec = resolve_spec(settings_from_mapping(settings, "test"))
    try:
        with Hypervisor() as hv:
            result = machine.up(spec, hv)
        assert result.address
        yield CloudVm(name, result.address, guest.default_user, key, spec.serial_log_path)
    finally:
        forget_domain(name)
        subprocess.run(["virsh", "-q", "undefine", name, "--snapshots-metadata"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def cloud_api(module_vm_dir: Path, cloud_vm: CloudVm) -> Iterator[ApiServer]:
    with serving(module_vm_dir, cloud_vm.name, token="cloud-" + secrets.token_hex(12)) as server:
        yield server


def test_memory_snapshot_resumes_with_a_process_still_running(cloud_api: ApiServer, cloud_vm: CloudVm) -> None:
    pid = cloud_vm.must("nohup sleep 7777 >/dev/null 2>&1 & echo $!")
    vm = f"/v1/vms/{cloud_vm.name}"
    with cloud_api.client(timeout=600) as http:
        made = http.post(f"{vm}/snapshots", json={"name": "with-sleep", "kind": "memory"})
        assert made.status_code == 201, made.text
        assert made.json()["kind"] == "memory"
        cloud_vm.must(f"kill {pid}")
        assert cloud_vm.ssh(f"kill -0 {pid}").returncode != 0
        reverted = http.post(f"{vm}/snapshots/with-sleep/revert")
        assert reverted.status_code == 200, reverted.text
        assert reverted.json()["state"] == "running"
    cloud_vm.wait_for_ssh(120)
    assert cloud_vm.must(f"tr '\\0' ' ' < /proc/{pid}/cmdline").strip() == "sleep 7777"


def test_disk_snapshot_round_trip_brings_a_deleted_file_back(cloud_api: ApiServer, cloud_vm: CloudVm) -> None:
    content = secrets.token_hex(16)
    cloud_vm.must(f"echo {content} > ~/keep.txt && sync")
    vm = f"/v1/vms/{cloud_vm.name}"
    with cloud_api.client(timeout=600) as http:
        made = http.post(f"{vm}/snapshots", json={"name": "with-file", "description": "keep.txt written"})
        assert made.status_code == 201, made.text
        assert (made.json()["kind"], made.json()["quiesced"]) == ("disk", True)  # the agent froze the filesystems
        assert cloud_vm.must("echo thawed > ~/after.txt && cat ~/after.txt") == "thawed"  # and thawed them
        cloud_vm.must("rm ~/keep.txt && sync")
        assert cloud_vm.ssh("cat ~/keep.txt").returncode != 0
        reverted = http.post(f"{vm}/snapshots/with-file/revert")
        assert reverted.status_code == 200, reverted.text
        assert reverted.json()["state"] == "running"
    cloud_vm.wait_for_ssh()
    assert cloud_vm.must("cat ~/keep.txt") == content
    assert cloud_vm.ssh("cat ~/after.txt").returncode != 0  # written after the snapshot: gone
    with cloud_api.client() as http:
        listed = {snap["name"]: snap for snap in http.get(f"{vm}/snapshots").json()}
    assert set(listed) == {"with-sleep", "with-file"} and listed["with-file"]["current"]
