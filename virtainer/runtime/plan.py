"""The launch plan: everything the in-container launcher needs, decided by the runtime at `create`.

The runtime (host side) validates the OCI bundle and the VM settings and writes the plan as JSON
next to the bundle; the container bind-mounts it read-only at PLAN_PATH. The launcher only reads
it, so every refusal happens at `create`, before anything exists.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

# typing.TYPE_CHECKING, without importing typing at run time: the supervisor imports this module
# and stays in memory while the VM runs (typing: ~0.4 MiB of its heap)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Paths inside the container (its root is the runtime tree, see build-tree.sh)
VM_ROOTFS = "/vm/rootfs"  # the image's root filesystem, with Docker's mounts relocated under it
CODE_DIR = "/opt/virtainer"  # virtainer's Python package is bound at CODE_DIR/virtainer
GUEST_DIR = "/opt/virtainer/guest"  # KERNEL + INITRD (guest/build-guest.sh)
KERNEL = "vmlinux"
INITRD = "initrd.gz"
RUN_DIR = "/opt/virtainer/run"  # this container's plan (read-only)
PLAN_PATH = f"{RUN_DIR}/plan.json"
STATE_DIR = "/run/virtainer"  # tmpfs: sockets, console log, libvirt's embedded root
EMBED_ROOT = f"{STATE_DIR}/libvirt"
EXEC_SOCKET = f"{STATE_DIR}/exec.sock"  # docker exec: the exec client asks the launcher here
# shared by every container of one runtime tree (host: CACHE/host-<tree key>, read-write): libvirt's
# probe of QEMU's capabilities (~5 s under TCG) and the KVM-or-TCG decision, made once per boot
SHARED_CACHE = f"{EMBED_ROOT}/cache"
# what the runtime tree must hold (paths in the tree, so in the container)
QEMU = "/usr/bin/qemu-system-x86_64"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
# qboot (qemu-system-data): a firmware that only boots the kernel QEMU was given, in a fraction of
# SeaBIOS's time (no boot menu, no option ROMs, no disk probing)
FIRMWARE = "/usr/share/qemu/qboot.rom"


def qemu_pidfile(domain: str) -> Path:
    """Where the embedded libvirt records the pid of the domain's QEMU (its layout under EMBED_ROOT)."""
    return Path(EMBED_ROOT) / "run" / "qemu" / f"{domain}.pid"


@dataclass(frozen=True)
class Process:
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    terminal: bool = False
    rows: int = 0
    cols: int = 0


@dataclass(frozen=True)
class Disk:
    """A RUNCVM_DISKS entry. path: the backing file as the container sees the image's root (the
    launcher finds it under VM_ROOTFS, volumes included); created (sparse, raw) with size_mib and
    formatted with filesystem, filled from the image's mount directory, when it does not exist."""

    path: str
    size_mib: int | None = None
    filesystem: str | None = None  # ext2, ext3 or ext4 (mke2fs), with mount
    mount: str | None = None  # where the guest mounts it; None: a bare block device

    @property
    def serial(self) -> str:
        """How the guest init finds it (virtio-blk serials hold at most 20 bytes)."""
        import hashlib  # here: the supervisor imports this module, and hashlib maps libcrypto (~3 MiB)

        return "vt-" + hashlib.sha256(self.path.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Nic:
    """One of the container's interfaces, handed to the VM (netsetup takes it over, vm renders it);
    here rather than in vm so that netsetup, and the runtime's create and exec through bundle,
    do not load vm's Jinja and lxml."""

    mac: str
    tap: str
    address: str  # a.b.c.d
    prefix: int
    gateway: str | None
    mtu: int | None = None
    ipv6: tuple[str, ...] = ()  # the global addresses, "address/prefix"
    gateway6: str | None = None


@dataclass(frozen=True)
class LaunchPlan:
    container_id: str
    process: Process
    hostname: str
    memory_mib: int
    vcpus: int
    accelerator: str  # auto, kvm or tcg (VIRTAINER_ACCEL)
    kernel_append: str = ""  # RUNCVM_KERNEL_APPEND
    debug: bool = False  # RUNCVM_KERNEL_DEBUG / VIRTAINER_DEBUG: the boot is shown on stderr
    network: bool = True  # take over the container's eth0 (needs NET_ADMIN, added at create)
    disks: tuple[Disk, ...] = ()  # RUNCVM_DISKS
    vnc_port: int | None = None  # RUNCVM_DISPLAY_MODE=vnc / RUNCVM_QEMU_VNC_DISPLAY: 5900 + display
    video: str = "none"  # the display adapter (RUNCVM_QEMU_VGA); one is needed for VNC
    # the servers Docker's resolver forwards other names to (--dns, else the host's), asked by the guest itself
    dns_upstreams: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LaunchPlan:
        data: dict[str, Any] = json.loads(text)
        data["process"] = Process(**data["process"])
        data["disks"] = tuple(Disk(**disk) for disk in data.get("disks", ()))
        data["dns_upstreams"] = tuple(data.get("dns_upstreams", ()))
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path = PLAN_PATH) -> LaunchPlan:
        return cls.from_json(Path(path).read_text())
