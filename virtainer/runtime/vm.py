"""The VM of one container: its domain XML and initramfs (pure functions; the guest init's
configuration is in guest_io)."""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import jinja2

from virtainer.accel import AcceleratorChoice
from virtainer.domain import validate_domain_xml
from virtainer.domain_model import METADATA_NS
from virtainer.runtime.guest_io import (
    PORT_CONTROL,
    PORT_STDERR,
    PORT_STDIN,
    PORT_STDOUT,
    PORTS,
    PortRelay,
    VmFiles,
    domain_name,
    guest_config,
)
from virtainer.runtime.plan import FIRMWARE, QEMU, VIRTIOFSD, LaunchPlan, Nic

__all__ = [  # guest_io's names too: vm was their home
    "PORTS",
    "PORT_CONTROL",
    "PORT_STDERR",
    "PORT_STDIN",
    "PORT_STDOUT",
    "AttachedDisk",
    "PortRelay",
    "VmFiles",
    "domain_name",
    "guest_config",
    "kernel_cmdline",
    "newc_archive",
    "render_vm_xml",
    "write_initrd",
]

# quiet: no kernel noise on the console log unless debugging; panic=-1: a dead init ends the VM.
# Under TCG every instruction of the boot costs, so the kernel skips what our VMs need no proof of:
# the crypto self-tests (cryptomgr.notests: 0.5-0.8 s here) and the IO-APIC timer check.
BASE_CMDLINE = "console=ttyS0 panic=-1 reboot=t cryptomgr.notests no_timer_check"
# q35, not i440fx: its ACPI PCI routing table is a static package where i440fx's is built by an
# AML loop, which the kernel evaluates for every PCI device (0.3 s per device under TCG here)
MACHINE = "q35"
# TCG's translation cache, memory beyond guest RAM that QEMU keeps once filled (a busybox boot
# fills ~47 MiB): at 16 or 12 MiB the boot retranslates after a few flushes for no measurable CPU
# time, at 8 MiB it costs ~0.4 CPU s more (interleaved rounds, see git log)
TCG_CACHE_MIB = 12


@dataclass(frozen=True)
class AttachedDisk:
    """A RUNCVM_DISKS backing file as QEMU opens it (a path in the container)."""

    source: Path
    format: str  # raw or qcow2
    serial: str


def kernel_cmdline(plan: LaunchPlan) -> str:
    # with a display: the kernel's messages on its screen too (the last console stays /dev/console)
    parts = ["console=tty0"] if plan.video != "none" else []
    parts += [BASE_CMDLINE, "loglevel=7" if plan.debug else "quiet loglevel=0"]
    if plan.kernel_append:
        parts.append(plan.kernel_append)
    return " ".join(parts)


@functools.cache
def _template() -> jinja2.Template:
    loader = jinja2.FileSystemLoader(Path(__file__).parent / "templates")
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("vm.xml.j2")


def render_vm_xml(
    plan: LaunchPlan,
    files: VmFiles,
    accelerator: AcceleratorChoice,
    nics: list[Nic],
    disks: tuple[AttachedDisk, ...] = (),
    vnc_listen: str = "0.0.0.0",
) -> str:
    """vnc_listen: where QEMU's VNC server listens in the container (the host link with a network)."""
    xml = _template().render(
        domain_type=accelerator.domain_type,
        metadata_ns=METADATA_NS,
        name=domain_name(plan.container_id),
        container_id=plan.container_id,
        accelerator=accelerator.kind,
        accelerator_reason=accelerator.reason,
        memory_mib=plan.memory_mib,
        vcpus=plan.vcpus,
        machine=MACHINE,
        tcg_cache_mib=TCG_CACHE_MIB,
        # a display needs SeaBIOS: qboot runs no VGA BIOS, so the VGA text console stays blank
        firmware=FIRMWARE if plan.video == "none" else None,
        kernel=files.kernel,
        initrd=files.initrd,
        cmdline=kernel_cmdline(plan),
        emulator=QEMU,
        virtiofsd=VIRTIOFSD,
        rootfs=files.rootfs,
        nics=nics,
        disks=disks,
        vnc_port=plan.vnc_port,
        vnc_listen=vnc_listen,
        video=plan.video,
        console_log=files.console_log,
        ports=[{"name": name, "path": files.socket(name)} for name in PORTS],
    )
    validate_domain_xml(xml)
    return xml


def newc_archive(files: dict[str, bytes]) -> bytes:
    """A cpio "newc" archive of regular files (and their directories), as the kernel unpacks it."""
    entries: list[tuple[str, int, bytes]] = []
    seen: set[str] = set()
    for path, data in files.items():
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in seen:
                seen.add(directory)
                entries.append((directory, 0o040755, b""))
        entries.append(("/".join(parts), 0o100644, data))
    out = bytearray()
    for inode, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(f"{value:08x}".encode() for value in fields) + encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out + b"\0" * (-len(out) % 512))


def write_initrd(base: Path, config: bytes, dest: Path) -> None:
    """The base initramfs with /virtainer/config appended (the kernel unpacks both, in order)."""
    extra = gzip.compress(newc_archive({"virtainer/config": config}), mtime=0)
    dest.write_bytes(base.read_bytes() + extra)
