"""End to end on the real Debian cloud guest: one boot sequence, shared by the assertions of this module.

`virtainer up` with an SSH key, user-data, meta-data and a data disk created on first start; log in
over real SSH; see the hostname from meta-data, a file written by user-data's runcmd, and the data
disk formatted and mounted; `virtainer down` powers the guest off cleanly. A second `virtainer up`
on the same diff, with changed user-data (so cloud-init runs its per-instance modules, disk setup
included, again), finds the data disk's filesystem and file as they were: formatted once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import forget_domain, unique_name
from tests.guests import cloud_guest
from tests.ssh import SshKey, make_key

pytestmark = [pytest.mark.guest, pytest.mark.cloud]
VIRTAINER = [sys.executable, "-m", "virtainer.cli"]
MARKER = "/var/tmp/virtainer-e2e-marker"
DATA_MOUNT = "/mnt/data"


@dataclass(frozen=True)
class BootedCloudGuest:
    name: str
    address: str
    user: str
    key: SshKey
    up: subprocess.CompletedProcess[str]
    command: list[str]  # the `virtainer up` command line, for the second start
    vm_dir: Path
    seen: dict[str, str] = field(default_factory=dict)  # what one test leaves for a later one

    def ssh(self, command: str, address: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.key.run(f"{self.user}@{address or self.address}", command)


@pytest.fixture(scope="module")
def booted(module_vm_dir: Path, nat_network: str) -> Iterator[BootedCloudGuest]:
    guest = cloud_guest()
    key = make_key(module_vm_dir)
    user_data = module_vm_dir / "user-data"
    user_data.write_text(f"#cloud-config\nruncmd:\n  - [sh, -c, 'echo from-user-data > {MARKER}']\n")
    meta_data = module_vm_dir / "meta-data"
    meta_data.write_text("local-hostname: e2e-host\n")
    name = unique_name("cloud")
    command = [
        *VIRTAINER, "up", name, "--image", str(guest.base_image), "--os-variant", "debian12",
        "--ssh-keys", str(key.public), "--user-data", str(user_data), "--meta-data", str(meta_data),
        "--vcpus", "2", "--memory", "1024", "--network", f"network:{nat_network}",
        "--state-dir", str(module_vm_dir / "state"),
        "--diff", str(module_vm_dir / "diff.qcow2"), "--boot-timeout", "420",
        "--disks", f"{module_vm_dir / 'data.qcow2'},{DATA_MOUNT},ext4,1G",
    ]  # fmt: skip
    up = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    try:
        assert up.returncode == 0, f"virtainer up failed:\n{up.stderr}"
        yield BootedCloudGuest(name, address_of(up), guest.default_user, key, up, command, module_vm_dir)
    finally:
        forget_domain(name)


def address_of(up: subprocess.CompletedProcess[str]) -> str:
    return next(line.split()[1] for line in up.stdout.splitlines() if line.startswith("address:"))


def test_up_reports_readiness_and_the_ssh_command(booted: BootedCloudGuest) -> None:
    for stage in ("running", "ip", "agent", "cloud-init", "ssh"):
        assert f"✓ {stage}" in booted.up.stderr
    assert f"ssh: ssh debian@{booted.address}" in booted.up.stdout
    assert "password" not in booted.up.stdout  # a key was given: no password is generated


def test_ssh_login_with_the_users_key_sees_meta_data_hostname(booted: BootedCloudGuest) -> None:
    done = booted.ssh("hostname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "e2e-host"


def test_user_data_runcmd_ran(booted: BootedCloudGuest) -> None:
    done = booted.ssh(f"cat {MARKER}; cloud-init status")
    assert done.returncode == 0, done.stderr
    assert "from-user-data" in done.stdout
    assert "status: done" in done.stdout


def test_status_shows_stages_and_base_identity(booted: BootedCloudGuest) -> None:
    done = subprocess.run([*VIRTAINER, "status", booted.name, "--json"], capture_output=True, text=True, check=True)
    status = json.loads(done.stdout)
    stages = [record["stage"] for record in status["readiness"]["stages"]]
    assert stages == ["running", "ip", "agent", "cloud-init", "ssh"]
    assert status["diff"]["base"]["format"] == "qcow2"
    assert status["vcpus"] == 2 and status["memory_mib"] == 1024


def test_tcg_guest_cpu_offers_no_amd_v_so_no_kvm_module_loads(booted: BootedCloudGuest) -> None:
    if "accelerator: tcg" not in booted.up.stdout:
        pytest.skip("the guest runs under KVM here: it has the host's CPU, nested virtualization included")
    done = booted.ssh("grep -cw svm /proc/cpuinfo; test -e /sys/module/kvm && echo kvm-loaded || echo no-kvm")
    assert done.stdout.split() == ["0", "no-kvm"], done.stdout + done.stderr


def test_growpart_is_skipped_on_a_disk_its_partition_fills(booted: BootedCloudGuest) -> None:
    """The test image's partition fills its 2 GiB and the diff is no bigger: virtainer's vendor-data
    turns growpart off, and cloud-init still grows the root filesystem into its partition."""
    done = booted.ssh("sudo grep -c 'growpart disabled: mode=off' /var/log/cloud-init.log; df -B1M --output=size /")
    assert done.returncode == 0, done.stderr
    skipped, _, root_mib = done.stdout.split()
    assert int(skipped) >= 1 and int(root_mib) > 1500, done.stdout


def data_disk_facts(booted: BootedCloudGuest, address: str | None = None) -> dict[str, str]:
    """What is mounted at DATA_MOUNT (device, filesystem, its UUID) and the file kept there."""
    script = (
        f"findmnt -n -o SOURCE,FSTYPE {DATA_MOUNT}; sudo blkid -s UUID -o value $(findmnt -n -o SOURCE {DATA_MOUNT}); "
        f"readlink -f /dev/disk/by-id/virtio-data0; cat {DATA_MOUNT}/kept 2>/dev/null || echo no-file"
    )
    done = booted.ssh(script, address)
    assert done.returncode == 0, done.stderr
    mount, uuid, by_id, kept = done.stdout.strip().splitlines()
    source, fstype = mount.split()
    return {"source": source, "fstype": fstype, "uuid": uuid, "by_id": by_id, "kept": kept}


def test_data_disk_is_created_formatted_and_mounted(booted: BootedCloudGuest) -> None:
    assert f"created data disk {booted.vm_dir / 'data.qcow2'}" in booted.up.stderr
    facts = data_disk_facts(booted)
    assert (facts["source"], facts["fstype"], facts["by_id"]) == ("/dev/vdb", "ext4", "/dev/vdb")
    assert facts["kept"] == "no-file"
    write = booted.ssh(f"echo written-on-first-boot | sudo tee {DATA_MOUNT}/kept && sync")
    assert write.returncode == 0, write.stderr
    booted.seen["uuid"] = facts["uuid"]


def test_down_powers_off_cleanly_not_destroyed(booted: BootedCloudGuest) -> None:
    done = subprocess.run([*VIRTAINER, "down", booted.name, "--timeout", "120"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "is off (guest agent" in done.stdout or "is off (ACPI" in done.stdout
    state = subprocess.run([*VIRTAINER, "status", booted.name, "--json"], capture_output=True, text=True, check=True)
    assert json.loads(state.stdout)["state"] == "shut-off"


def test_second_up_keeps_the_data_disk_formatted_once(booted: BootedCloudGuest) -> None:
    """Changed user-data: a new instance-id, so cloud-init's disk setup runs again and must not format."""
    user_data = booted.vm_dir / "user-data-2"
    user_data.write_text(f"#cloud-config\nruncmd:\n  - [sh, -c, 'echo second-user-data > {MARKER}']\n")
    command = [*booted.command]
    command[command.index("--user-data") + 1] = str(user_data)
    up = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert up.returncode == 0, f"second virtainer up failed:\n{up.stderr}"
    assert "reusing diff" in up.stderr and "created data disk" not in up.stderr
    address = address_of(up)
    assert booted.ssh(f"cat {MARKER}", address).stdout.strip() == "second-user-data"  # new user-data ran
    facts = data_disk_facts(booted, address)
    assert (facts["source"], facts["fstype"]) == ("/dev/vdb", "ext4")
    assert facts["uuid"] == booted.seen["uuid"]  # the same filesystem: not formatted again
    assert facts["kept"] == "written-on-first-boot"
    done = subprocess.run([*VIRTAINER, "down", booted.name, "--timeout", "120"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
