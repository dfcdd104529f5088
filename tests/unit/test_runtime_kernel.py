"""The guest kernel's configuration fragment against what the runtime's VMs use: every device the
domain XML renders (on TCG and on KVM) and every filesystem the guest init mounts has its driver
built in, since the guest loads no modules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from virtainer.accel import AcceleratorChoice
from virtainer.domain import validate_domain_xml
from virtainer.runtime import artifacts
from virtainer.runtime.plan import Disk, LaunchPlan, Process
from virtainer.runtime.vm import AttachedDisk, Nic, VmFiles, render_vm_xml

FRAGMENT = Path(artifacts.HERE) / "guest" / "kernel.config"
INIT = Path(artifacts.HERE) / "guest" / "init.c"
# what each element of the domain XML needs in the guest
DRIVERS = {
    "filesystem": ("CONFIG_VIRTIO_PCI", "CONFIG_FUSE_FS", "CONFIG_VIRTIO_FS"),
    "interface": ("CONFIG_VIRTIO_NET",),
    "disk": ("CONFIG_VIRTIO_BLK",),
    "channel": ("CONFIG_VIRTIO_CONSOLE",),
    "serial": ("CONFIG_SERIAL_8250", "CONFIG_SERIAL_8250_CONSOLE"),
    "video": ("CONFIG_VGA_CONSOLE", "CONFIG_VT_CONSOLE"),
}
FILESYSTEMS = {  # the guest init's mount types, and what RUNCVM_DISKS formats
    "virtiofs": "CONFIG_VIRTIO_FS",
    "proc": "CONFIG_PROC_FS",
    "sysfs": "CONFIG_SYSFS",
    "devtmpfs": "CONFIG_DEVTMPFS",
    "devpts": "CONFIG_UNIX98_PTYS",
    "tmpfs": "CONFIG_TMPFS",
    "mqueue": "CONFIG_POSIX_MQUEUE",
    "ext4": "CONFIG_EXT4_FS",
    "ext2": "CONFIG_EXT4_USE_FOR_EXT2",
}


def built_in() -> set[str]:
    lines = FRAGMENT.read_text().splitlines()
    assert all(not line.startswith("CONFIG_") or re.fullmatch(r"CONFIG_\w+=\S+", line) for line in lines), (
        "one option per line, no trailing comment: build-kernel.sh compares them with the .config"
    )
    return {line.split("=")[0] for line in lines if line.endswith("=y")}


def test_every_device_the_vm_has_is_built_into_the_guest_kernel() -> None:
    process = Process(args=["true"], env=[])
    plan = LaunchPlan("c0ffee" * 10, process, "h", 256, 2, "auto", video="vga", vnc_port=5900,
                      disks=(Disk("/d", 16),))  # fmt: skip
    files = VmFiles(Path("/g/vmlinux"), Path("/i"), Path("/c"), Path("/s"), Path("/r"))
    nic = Nic(mac="02:42:ac:11:00:02", tap="tap0", address="172.17.0.2", prefix=16, gateway=None)
    disk = AttachedDisk(Path("/d"), "raw", "vt-0")
    options = built_in()
    for accelerator in (AcceleratorChoice("tcg", "test"), AcceleratorChoice("kvm", "test")):
        devices = validate_domain_xml(render_vm_xml(plan, files, accelerator, [nic], (disk,))).find("devices")
        assert devices is not None
        for element in {child.tag for child in devices}:
            missing = [option for option in DRIVERS.get(element, ()) if option not in options]
            assert not missing, f"<{element}> needs {missing} in kernel.config"
    # PVH: QEMU enters the uncompressed kernel (TCG and KVM alike); ACPI: the init's power-off on q35
    assert {"CONFIG_PVH", "CONFIG_ACPI", "CONFIG_PCI_MSI", "CONFIG_KVM_GUEST", "CONFIG_BLK_DEV_INITRD"} <= options


def test_every_filesystem_the_guest_init_mounts_is_built_in() -> None:
    mounted = set(re.findall(r'mount(?:_or_die)?\([^;]*?"(\w+)", (?:MS_|0)', INIT.read_text()))
    assert {"virtiofs", "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "mqueue"} <= mounted
    options = built_in()
    assert [fs for fs in mounted | {"ext4", "ext2"} if FILESYSTEMS.get(fs) not in options] == []


def test_a_change_to_the_init_rebuilds_the_initramfs_not_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel compiles for minutes, the initramfs in seconds: each has its own key."""
    init, fragment = tmp_path / "init.c", tmp_path / "kernel.config"
    init.write_text("int main(void) { return 0; }\n")
    fragment.write_text("CONFIG_VIRTIO=y\n")
    monkeypatch.setenv("VIRTAINER_RUNTIME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(artifacts, "GUEST_SOURCES", (artifacts.GUEST_SCRIPT, init))
    monkeypatch.setattr(artifacts, "KERNEL_SOURCES", (artifacts.KERNEL_SCRIPT, fragment))
    kernel, guest = artifacts.kernel_dir(), artifacts.guest_dir()

    init.write_text("int main(void) { return 1; }\n")
    assert artifacts.kernel_dir() == kernel
    assert artifacts.guest_dir() != guest
    guest = artifacts.guest_dir()

    fragment.write_text("CONFIG_VIRTIO=y\nCONFIG_VIRTIO_NET=y\n")
    assert artifacts.kernel_dir() != kernel
    assert artifacts.guest_dir() != guest  # the initramfs' directory carries the kernel it was built with
