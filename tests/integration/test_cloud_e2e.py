"""End to end on the real Debian cloud guest: one boot, shared by the assertions of this module.

`virtainer up` with an SSH key, user-data and meta-data; log in over real SSH; see the hostname from
meta-data and a file written by user-data's runcmd; `virtainer down` powers the guest off cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import forget_domain, unique_name
from tests.guests import cloud_guest
from tests.ssh import SshKey, make_key

pytestmark = [pytest.mark.guest, pytest.mark.cloud]
VIRTAINER = [sys.executable, "-m", "virtainer.cli"]
MARKER = "/var/tmp/virtainer-e2e-marker"


@dataclass(frozen=True)
class BootedCloudGuest:
    name: str
    address: str
    user: str
    key: SshKey
    up: subprocess.CompletedProcess[str]

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        return self.key.run(f"{self.user}@{self.address}", command)


@pytest.fixture(scope="module")
def booted(module_vm_dir: Path) -> Iterator[BootedCloudGuest]:
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
        "--vcpus", "2", "--memory", "1024", "--state-dir", str(module_vm_dir / "state"),
        "--diff", str(module_vm_dir / "diff.qcow2"), "--boot-timeout", "420",
    ]  # fmt: skip
    up = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    try:
        assert up.returncode == 0, f"virtainer up failed:\n{up.stderr}"
        address = next(line.split()[1] for line in up.stdout.splitlines() if line.startswith("address:"))
        yield BootedCloudGuest(name, address, guest.default_user, key, up)
    finally:
        forget_domain(name)


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
    assert [record["stage"] for record in status["stages"]] == ["running", "ip", "agent", "cloud-init", "ssh"]
    assert status["base"]["identity"]["format"] == "qcow2"
    assert status["vcpus"] == 2 and status["memory_mib"] == 1024


def test_down_powers_off_cleanly_not_destroyed(booted: BootedCloudGuest) -> None:
    done = subprocess.run([*VIRTAINER, "down", booted.name, "--timeout", "120"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "is off (guest agent" in done.stdout or "is off (ACPI" in done.stdout
    state = subprocess.run([*VIRTAINER, "status", booted.name, "--json"], capture_output=True, text=True, check=True)
    assert json.loads(state.stdout)["state"] == "shut-off"
