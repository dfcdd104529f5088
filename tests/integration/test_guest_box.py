"""The guest cannot make virtainer read a host file (issue 8 §3), on the tiny guest under the real
libvirtd and QEMU: a raw data disk into which the guest wrote a qcow2 header naming a host file
stays raw at the next start, and the guest reads its own bytes, not the host file's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guests import tiny_guest
from tests.tiny_vm import console_answer, forgotten_afterwards, tiny_spec_of
from tests.waiting import wait_until
from virtainer import machine, storage
from virtainer.hypervisor import Hypervisor
from virtainer.spec import VmSpec

pytestmark = pytest.mark.guest
SECRET = "HOST-SECRET-4242"


def serial_log(spec: VmSpec) -> str:
    path = spec.serial_log_path
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def name() -> Iterator[str]:
    with forgotten_afterwards("guestbox") as vm:
        yield vm


def test_a_qcow2_header_written_by_the_guest_does_not_reach_a_host_file(
    vm_dir: Path, name: str
) -> None:
    tiny = tiny_guest()
    secret = vm_dir / "api-token"
    secret.write_text(SECRET * 64 + "\n")
    disk = vm_dir / "data.raw"
    disk.write_bytes(bytes(8 << 20))
    spec = tiny_spec_of(tiny, name, vm_dir, disks=[str(disk)])
    with Hypervisor() as hv:
        machine.up(spec, hv, wait=False)  # the first attach records the disk as raw
        hv.destroy(name)

    # what the guest can do to its raw disk: a qcow2 header whose backing file is the host's secret
    header = vm_dir / "header.qcow2"
    storage.qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(header), "8M")
    with disk.open("r+b") as stream:
        stream.write(header.read_bytes())

    with Hypervisor() as hv:
        machine.up(spec, hv, wait=False)
        wait_until(lambda: "GUEST-READY" in serial_log(spec), 60, "the guest's GUEST-READY")
        # the data disk is vdb: how many of its lines hold the secret, and its first bytes
        found = console_answer(hv, name, f"echo FOUND-$(grep -c {SECRET} /dev/vdb)", "FOUND-")
        magic = console_answer(hv, name, "echo MAGIC-$(head -c 3 /dev/vdb)", "MAGIC-")
    assert found == "FOUND-0", "the guest read the host file through the header it wrote"
    assert magic == "MAGIC-QFI"  # it reads the raw bytes it wrote itself
