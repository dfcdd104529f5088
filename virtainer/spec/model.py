"""The VM spec: what one VM is, typed, decided once by `resolve_spec`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from virtainer.diff_files import DiffFiles
from virtainer.firmware import UefiFirmware
from virtainer.stages import STAGES, Stage

Accelerator = Literal["auto", "kvm", "tcg"]
PasswordPolicy = Literal["auto", "random", "fixed", "none"]
NetworkMode = Literal["network", "bridge", "user", "none"]
Firmware = Literal["bios", "uefi"]
ClockOffset = Literal["utc", "localtime"]

DEFAULT_STATE_ROOT = Path("/var/lib/virtainer")
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat")
MACHINES = ("pc", "q35")
DISK_BUSES = ("virtio", "scsi", "sata", "ide")
DISK_CACHES = ("default", "none", "writeback", "writethrough", "unsafe", "directsync")
VIDEO_MODELS = ("virtio", "vga", "cirrus", "bochs", "none")
VNC_BASE_PORT = 5900
ACCELERATORS: tuple[Accelerator, ...] = ("auto", "kvm", "tcg")
PASSWORD_POLICIES: tuple[PasswordPolicy, ...] = ("auto", "random", "fixed", "none")
FIRMWARES: tuple[Firmware, ...] = ("bios", "uefi")
CLOCK_OFFSETS: tuple[ClockOffset, ...] = ("utc", "localtime")


@dataclass(frozen=True)
class ImageSource:
    path: Path | None = None
    url: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        return str(self.path) if self.path else str(self.url)


@dataclass(frozen=True)
class DataDisk:
    """An extra disk: an existing image, or one created on first start with a size."""

    path: Path
    size_mib: int | None = None
    filesystem: str | None = None
    mount: str | None = None


Protocol = Literal["tcp", "udp"]
PortRange = tuple[int, int]  # first, last (equal for one port)


@dataclass(frozen=True)
class PortRule:
    """Connections to the container's INCOMING port(s) go to the guest's port(s): `tcp:8080:80`.

    target: an address inside the guest LAN other than the guest's own (None: the guest)."""

    protocol: Protocol
    incoming: PortRange
    guest: PortRange
    target: ipaddress.IPv4Address | None = None

    def pairs(self) -> list[tuple[int, int]]:
        """(incoming, guest) port by port."""
        offset = self.guest[0] - self.incoming[0]
        return [(port, port + offset) for port in range(self.incoming[0], self.incoming[1] + 1)]

    def describe(self) -> str:
        def text(ports: PortRange) -> str:
            return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"

        target = f"{self.target}:" if self.target else ""
        return f"{self.protocol}:{text(self.incoming)}->{target}{text(self.guest)}"


@dataclass(frozen=True)
class GuestForward:
    """A guest connection to TARGET:TARGET-PORT is carried to REAL:REAL-PORT."""

    protocol: Protocol
    target: ipaddress.IPv4Address
    target_port: int
    real: ipaddress.IPv4Address
    real_port: int

    def describe(self) -> str:
        return f"{self.protocol}:{self.target}:{self.target_port}->{self.real}:{self.real_port}"


@dataclass(frozen=True)
class NetworkSpec:
    mode: NetworkMode = "network"
    source: str = "default"  # libvirt network or host bridge name
    # Network control (inside the virtainer container, or with user-mode networking):
    # explicit redirects; None: every port but the container's own (NAT in the container), or
    # only SSH (user-mode networking in the container: QEMU can only forward port by port)
    ports: tuple[PortRule, ...] | None = None
    forwards: tuple[GuestForward, ...] = ()
    restrict: bool = False  # the guest reaches nothing but its explicit forwards
    lan: ipaddress.IPv4Network | None = None  # None: chosen by the container / QEMU's 10.0.2.0/24
    # user mode in place of the container's NAT network, which needs NET_ADMIN (see spec.container)
    user_mode_fallback: bool = False

    @property
    def gateway(self) -> ipaddress.IPv4Address | None:
        return self.lan.network_address + 1 if self.lan else None

    @property
    def guest_ip(self) -> ipaddress.IPv4Address | None:
        """The guest's fixed address in its LAN (handed out by DHCP to its MAC)."""
        return self.lan.network_address + 2 if self.lan else None

    def incoming_port(self, guest_port: int, protocol: Protocol = "tcp") -> int | None:
        """The incoming port an explicit rule forwards to this port of the guest, if any."""
        for rule in self.ports or ():
            if rule.protocol == protocol and rule.target is None:
                for incoming, guest in rule.pairs():
                    if guest == guest_port:
                        return incoming
        return None

    @property
    def controlled(self) -> bool:
        """True when a network-control setting was given (ports, forwards, restrict, lan)."""
        return self.ports is not None or bool(self.forwards or self.restrict or self.lan)


@dataclass(frozen=True)
class DirectBoot:
    """Boot a kernel directly (no firmware/bootloader): used by the tiny test guest."""

    kernel: Path
    initrd: Path | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class VncSpec:
    """A VNC server on the guest's display. port None: libvirt picks the first free from 5900."""

    port: int | None
    listen: str
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VmSpec:
    name: str
    vcpus: int
    memory_mib: int
    image: ImageSource
    diff_path: Path
    state_dir: Path
    os_variant: str = "generic"
    default_user: str | None = None
    hostname: str = "vm"
    disk_size_mib: int | None = None
    accelerator: Accelerator = "auto"
    ssh_authorized_keys: tuple[str, ...] = ()
    user_data: Path | None = None
    meta_data: Path | None = None
    network_config: Path | None = None
    seed_iso: Path | None = None
    seed_path: Path | None = None
    password: str | None = field(default=None, repr=False)
    password_policy: PasswordPolicy = "auto"
    mac_address: str | None = None
    data_disks: tuple[DataDisk, ...] = ()
    network: NetworkSpec = NetworkSpec()
    direct_boot: DirectBoot | None = None
    machine: str = "pc"
    wait_for: tuple[Stage, ...] = STAGES
    ready_command: str | None = None  # the exec stage's command (sh -c in the guest)
    boot_timeout_s: float = 600.0
    stop_timeout_s: float = 60.0
    # guest hardware: the profile's defaults, each overridable by its own setting
    profile: str = "linux"
    firmware: Firmware = "bios"
    uefi: UefiFirmware | None = None  # OVMF's code and NVRAM template when firmware is uefi
    tpm: bool = False  # an emulated TPM 2.0 (swtpm)
    clock_offset: ClockOffset = "utc"
    disk_bus: str = "virtio"
    disk_cache: str | None = None  # None: QEMU's default (writeback, guest flushes honoured)
    nic_model: str = "virtio"
    # the guest has virtio drivers (every linux profile; windows with windows_drivers=virtio):
    # its cloud-init seed is then a read-only virtio disk, found by its cidata label by any cloud
    # kernel, where a cdrom on q35's AHCI is invisible to kernels without AHCI (Debian's cloud)
    virtio_drivers: bool = True
    video: str = "virtio"  # the display adapter, when there is one (VNC, Windows); "none": never
    vnc: VncSpec | None = None
    storage_dir: Path | None = None  # SupraVM's layout: the directory of sys.qcow2 and dataN.qcow2

    @property
    def seed_bus(self) -> str:
        """Where the seed is attached: a virtio disk, or (no virtio drivers) a cdrom on IDE/SATA."""
        if self.virtio_drivers:
            return "virtio"
        return "sata" if self.machine == "q35" else "ide"

    @property
    def generated_seed_path(self) -> Path:
        return self.seed_path or self.state_dir / "seed.iso"

    @property
    def serial_log_path(self) -> Path:
        return self.state_dir / "serial.log"

    @property
    def domain_xml_path(self) -> Path:
        """The domain as last defined (for the user to read; libvirt keeps its own copy)."""
        return self.state_dir / "domain.xml"

    @property
    def readiness_path(self) -> Path:
        return self.state_dir / READINESS_FILE

    @property
    def files(self) -> DiffFiles:
        """The files beside the diff (its records, NVRAM, password, snapshot records, lock)."""
        return DiffFiles(self.diff_path)

    @property
    def base_record_path(self) -> Path:
        return self.files.base_record

    @property
    def password_path(self) -> Path:
        return self.files.password

    @property
    def nvram_path(self) -> Path:
        return self.files.nvram

    @property
    def nic_record_path(self) -> Path:
        return self.files.nic_record

    @property
    def format_record_path(self) -> Path:
        return self.files.format_record


READINESS_FILE = "readiness.json"


def spec_with(spec: VmSpec, **changes: Any) -> VmSpec:
    return replace(spec, **changes)
