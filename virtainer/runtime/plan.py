"""The launch plan: everything the in-container launcher needs, decided by the runtime at `create`.

The runtime (host side) validates the OCI bundle and the VM settings and writes the plan as JSON
next to the bundle; the container bind-mounts it read-only at PLAN_PATH. The launcher only reads
it, so every refusal happens at `create`, before anything exists.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Paths inside the container (its root is the runtime tree, see build-tree.sh)
VM_ROOTFS = "/vm/rootfs"  # the image's root filesystem, with Docker's mounts relocated under it
CODE_DIR = "/opt/virtainer"  # virtainer's Python package is bound at CODE_DIR/virtainer
GUEST_DIR = "/opt/virtainer/guest"  # vmlinuz + initrd.gz
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LaunchPlan:
        data: dict[str, Any] = json.loads(text)
        data["process"] = Process(**data["process"])
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path = PLAN_PATH) -> LaunchPlan:
        return cls.from_json(Path(path).read_text())
