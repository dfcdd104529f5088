"""Guest hardware on real guests: UEFI (OVMF) with NVRAM and an emulated TPM, SupraVM's disk layout
with a standalone system disk and data disks in order, and a VNC display with a screenshot.

The tiny guest boots by direct kernel boot; under UEFI, OVMF loads the kernel through its EFI stub.
"""

from __future__ import annotations

import hashlib
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.guests import TinyGuest, tiny_guest
from tests.tiny_cli import serial_log, tiny_up_args, virtainer
from tests.vnc import rfb_security_types
from tests.waiting import wait_until
from virtainer.firmware import find_ovmf

pytestmark = pytest.mark.guest
SWTPM_STATE = Path("/var/lib/libvirt/swtpm")


@pytest.fixture(scope="module")
def tiny() -> TinyGuest:
    return tiny_guest()


def tiny_args(tiny: TinyGuest, name: str, vm_dir: Path, *extra: str) -> list[str]:
    return tiny_up_args(tiny, name, vm_dir, *extra, boot_timeout_s=120)  # UEFI under TCG takes longer


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def domain_uuid(name: str) -> str:
    done = subprocess.run(["virsh", "-q", "domuuid", name], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_supravm_layout_boots_uefi_with_tpm_data_disks_in_order_and_nvram_kept(
    tiny: TinyGuest, vm_dir: Path, domain_name: str
) -> None:
    # SupraVM's volume: a standalone sys.qcow2 (no base image) and data0, data1; data3 after a gap
    store = vm_dir / "opt-vm" / "linux" / "tinyvm"
    store.mkdir(parents=True)
    sys_disk = store / "sys.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(tiny.base_image), str(sys_disk)], check=True)
    for data in ("data0", "data1", "data3"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(store / f"{data}.qcow2"), "16M"], check=True)
    for path in [vm_dir / "opt-vm", vm_dir / "opt-vm" / "linux", store]:
        path.chmod(0o755)
    args = tiny_args(tiny, domain_name, vm_dir, "--storage-id", "tinyvm", "--storage-root", str(vm_dir / "opt-vm"),
                     "--tpm", "emulated")  # fmt: skip

    first = virtainer(*args)
    assert "no backing file: used as it is" in first.stderr
    nvram = store / "sys.qcow2.nvram.fd"
    assert f"UEFI NVRAM {nvram} (created from" in first.stderr
    wait_until(lambda: "GUEST-READY" in serial_log(vm_dir), 180, "the tiny guest's ready line under UEFI")
    log = serial_log(vm_dir)
    assert "EFI stub:" in log  # OVMF started the kernel through its EFI stub: a UEFI boot
    assert "Linux version" in log
    assert re.search(r"ACPI: TPM2 ", log)  # the emulated TPM 2.0 is in the guest's ACPI tables
    assert "GUEST-DISKS: vda:- vdb:data0 vdc:data1 vdd:cidata\n" in log  # in order, data3 (after the gap) left out;
    # the cloud-init seed last, a read-only virtio disk (SupraVM's q35: a SATA cdrom would be unseen)
    assert "GUEST-DISK-BOOTS=1" in log
    assert not (store / "sys.qcow2.base.json").exists()  # a standalone disk has no base to record
    tpm_state = SWTPM_STATE / domain_uuid(domain_name) / "tpm2"
    assert tpm_state.is_dir() and any(tpm_state.iterdir())

    assert "ACPI power button" in virtainer("down", domain_name, "--timeout", "90").stdout
    firmware = find_ovmf()
    assert firmware is not None
    template = sha256(firmware.vars_template)
    after_first = (nvram.stat().st_ino, sha256(nvram))
    assert after_first[1] != template  # OVMF wrote its variables (boot entries, counters) into it

    second = virtainer(*args)
    assert f"UEFI NVRAM {nvram} (reusing)" in second.stderr
    wait_until(lambda: "GUEST-READY" in serial_log(vm_dir), 180, "the second boot's ready line")
    log = serial_log(vm_dir)
    assert "GUEST-DISK-BOOTS=2" in log  # the standalone system disk kept the first boot's writes
    assert "GUEST-DISKS: vda:- vdb:data0 vdc:data1 vdd:cidata\n" in log
    assert tpm_state.is_dir()  # same domain UUID, same TPM state
    virtainer("down", domain_name, "--timeout", "90")
    # the very same variable store: not recreated from the template, only written by the firmware
    assert nvram.stat().st_ino == after_first[0]
    assert sha256(nvram) != template


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_vnc_handshake_on_the_port_and_a_screenshot(tiny: TinyGuest, vm_dir: Path, domain_name: str) -> None:
    port = free_port()
    args = tiny_args(tiny, domain_name, vm_dir, "--image", str(tiny.base_image), "--diff", str(vm_dir / "diff.qcow2"),
                     "--vnc", str(port), "--vnc-listen", "127.0.0.1", "--vnc-password", "pw-1234")  # fmt: skip
    virtainer(*args)
    wait_until(lambda: "GUEST-READY" in serial_log(vm_dir), 90, "the tiny guest's ready line")

    version, types = wait_until(lambda: _try_rfb(port), 30, f"a VNC server on 127.0.0.1:{port}")
    assert re.fullmatch(rb"RFB 003\.00[38]\n", version)
    assert types == [2]  # VNC authentication only: the password is in force
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{port}"]  # only where asked
    domain_xml = vm_dir / "state" / "domain.xml"
    assert stat.S_IMODE(domain_xml.stat().st_mode) == 0o600  # it holds the VNC password

    shot = vm_dir / "screen.png"
    done = virtainer("screenshot", domain_name, "-o", str(shot))
    assert "saved to" in done.stdout
    data = shot.read_bytes()
    assert len(data) > 100
    assert data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"P6\n")
    virtainer("destroy", domain_name)


def _try_rfb(port: int) -> tuple[bytes, list[int]] | None:
    try:
        return rfb_security_types(port)
    except OSError:
        return None
