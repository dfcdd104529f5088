"""Rewriting an OCI bundle's config.json at `create` so that runc starts a VM instead of the command.

The container keeps its namespaces, cgroup and Docker's bookkeeping; what changes:
- root: the read-only runtime tree (QEMU, libvirt, virtiofsd, Python), with the image's root
  filesystem bound at VM_ROOTFS (the overlay's merged dir, so the VM's writes land in the
  container's writable layer) and every mount Docker made for the image (/etc/hosts, resolv.conf,
  hostname, volumes, tmpfs) relocated under it, where virtiofsd serves them to the guest;
- process: the launcher, under tini; the original process goes to the launch plan;
- what the launcher needs: NET_ADMIN/SYS_ADMIN, /dev/kvm and /dev/net/tun, no seccomp/AppArmor
  filter (the workload itself runs in the VM, behind the hypervisor).
All validation happens here, so bad input fails `create` with one line and leaves nothing behind.
"""

from __future__ import annotations

import copy
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from virtainer.errors import ConfigError
from virtainer.runtime.netsetup import docker_upstream_servers
from virtainer.runtime.plan import (
    CODE_DIR,
    GUEST_DIR,
    RUN_DIR,
    SHARED_CACHE,
    VM_ROOTFS,
    Disk,
    LaunchPlan,
    Process,
)
from virtainer.runtime.processes import BundleError as BundleError  # raised here too; callers catch it from bundle
from virtainer.runtime.processes import launcher_process, process_from_oci
from virtainer.spec import VIDEO_MODELS, VNC_BASE_PORT, parse_choice, parse_disk, parse_vnc, settings_from_env
from virtainer.spec.reader import Reader
from virtainer.spec.settings import SETTINGS_BY_KEY
from virtainer.validators import Invalid, flag_setting

MARK = "dev.virtainer.runtime"  # annotation: this config.json was rewritten already
ACCEL_ANNOTATION = "dev.virtainer.accelerator"
DEFAULT_MEMORY_MIB = 512
MIN_GUEST_MEMORY_MIB = 64
# what the container needs beyond guest RAM: QEMU (TCG translation cache included), virtiofsd,
# the launcher with embedded libvirt: measured idle ~128 MiB RSS (every shared file in full, as
# for the first container), ~100 MiB charged to the cgroup (see README)
OVERHEAD_MIB = 128
CONTAINER_LEVEL = ("/proc", "/sys", "/dev")  # mounts for the launcher itself; the guest makes its own
# host devices the launcher may use: (path, major, minor), added when present on the host
DEVICES = (("/dev/kvm", 10, 232), ("/dev/net/tun", 10, 200), ("/dev/vhost-net", 10, 238))
DOCKER_INIT = "/sbin/docker-init"  # `docker run --init`: the VM's own init does its job
# the core's settings the runtime reads, under their VIRTAINER_* and RUNCVM_* names
VM_SETTINGS = ("disks", "vnc", "video")
# what the launcher formats (mke2fs, in the runtime tree) and the guest kernel mounts (ext4 built in)
DISK_FILESYSTEMS = ("ext4", "ext3", "ext2")
MAX_DISKS = 16  # the guest init's and the template's limit


@dataclass(frozen=True)
class HostPaths:
    """Host-side sources of what the container binds in."""

    tree: Path  # the runtime tree, the container's root
    code: Path  # virtainer's Python package
    guest: Path  # the guest kernel and initramfs (plan.KERNEL, plan.INITRD)
    run: Path  # this container's own directory (the plan), next to the bundle
    shared: Path  # read-write cache shared by the containers of this tree


def rewrite(
    config: dict[str, Any], bundle: Path, paths: HostPaths, container_id: str
) -> tuple[dict[str, Any], LaunchPlan]:
    """The rewritten config.json and the launch plan. Raises ConfigError/BundleError on bad input."""
    if config.get("annotations", {}).get(MARK):
        raise BundleError("this bundle's config.json was already rewritten by virtainer")
    new = copy.deepcopy(config)
    image_root = _image_root(config, bundle)
    process = config.get("process") or {}
    env = list(process.get("env") or [])
    settings = dict(entry.split("=", 1) for entry in env if "=" in entry)
    disks, vnc_port, video = _disks_and_display(settings)
    plan = LaunchPlan(
        container_id=container_id,
        process=_guest_process(process, image_root, config.get("mounts") or []),
        hostname=str(config.get("hostname") or container_id[:12]),
        memory_mib=guest_memory_mib(config),
        vcpus=guest_vcpus(config),
        accelerator=_choice(settings, "VIRTAINER_ACCEL", ("auto", "kvm", "tcg"), "auto"),
        kernel_append=settings.get("RUNCVM_KERNEL_APPEND", ""),
        debug=_flag(settings, "RUNCVM_KERNEL_DEBUG") or _flag(settings, "VIRTAINER_DEBUG"),
        network=_own_network_namespace(config),
        disks=disks,
        vnc_port=vnc_port,
        video=video,
        dns_upstreams=docker_upstream_servers(_docker_record(config)),
    )
    new["root"] = {"path": str(paths.tree), "readonly": True}
    read_only = bool((config.get("root") or {}).get("readonly"))  # docker run --read-only, runc's spec
    new["mounts"] = _mounts(config.get("mounts") or [], image_root, paths, read_only=read_only)
    new["process"] = launcher_process(process)
    linux = new.setdefault("linux", {})
    linux.pop("seccomp", None)
    _add_devices(linux)
    new.setdefault("annotations", {})[MARK] = "vm"
    new["annotations"][ACCEL_ANNOTATION] = plan.accelerator
    return new, plan


def _disks_and_display(settings: dict[str, str]) -> tuple[tuple[Disk, ...], int | None, str]:
    """RUNCVM_DISKS, RUNCVM_DISPLAY_MODE, RUNCVM_QEMU_VGA, RUNCVM_QEMU_VNC_DISPLAY (and their
    VIRTAINER_* names), read by the core's settings table and parsers: errors name the variable."""
    names = {name for key in VM_SETTINGS for name in SETTINGS_BY_KEY[key].env_names}
    read = Reader(settings_from_env({name: value for name, value in settings.items() if name in names
                                     and name.startswith(("VIRTAINER_", "RUNCVM_"))}))  # fmt: skip
    disks = tuple(read.items("disks", _runtime_disk))
    if len(disks) > MAX_DISKS:
        raise read.fail("disks", f"at most {MAX_DISKS} disks (vda to vdp)")
    vnc = read.get("vnc", parse_vnc)
    vnc_port = None if vnc is None else vnc or VNC_BASE_PORT  # auto: the first display, as RunCVM
    video = read.get("video", lambda value: parse_choice(value, VIDEO_MODELS), "none" if vnc is None else "virtio")
    if vnc_port is not None and video == "none":
        raise read.fail("video", "a display adapter for VNC to show (virtio, vga, cirrus or bochs), or no VNC")
    return disks, vnc_port, video


def _runtime_disk(value: object) -> Disk:
    """One RUNCVM_DISKS entry, in the core's grammar, with what the runtime adds: PATH is a path
    in the container (absolute), FS one that mke2fs makes."""
    disk = parse_disk(value)
    if not str(value).lstrip().startswith("/"):
        raise Invalid("PATH,MOUNT,FS[,SIZE] (or PATH[,SIZE]) with PATH an absolute path in the container")
    if disk.filesystem is not None and disk.filesystem not in DISK_FILESYSTEMS:
        raise Invalid(f"PATH,MOUNT,FS[,SIZE] with FS one of {', '.join(DISK_FILESYSTEMS)} (formatted with mke2fs)")
    return Disk(path=str(disk.path), size_mib=disk.size_mib, filesystem=disk.filesystem, mount=disk.mount)


def _own_network_namespace(config: dict[str, Any]) -> bool:
    """True when runc creates a network namespace for the container (not --network host/container:)."""
    namespaces = (config.get("linux") or {}).get("namespaces") or []
    return any(ns.get("type") == "network" and not ns.get("path") for ns in namespaces)


def _docker_record(config: dict[str, Any]) -> Path | None:
    """dockerd's directory for this container (config.v2.json, hostconfig.json), the one its
    resolv.conf is bound from; None when no resolv.conf is bound (not from dockerd)."""
    mounts = config.get("mounts") or []
    source = next((m.get("source") for m in mounts if m.get("destination") == "/etc/resolv.conf"), None)
    return Path(source).parent if source else None


def _image_root(config: dict[str, Any], bundle: Path) -> Path:
    root = config.get("root") or {}
    if not root.get("path"):
        raise BundleError("config.json has no root.path")
    path = Path(root["path"])
    return path if path.is_absolute() else (bundle / path).resolve()


# -- the process --------------------------------------------------------------------------------


def _guest_process(process: dict[str, Any], image_root: Path, mounts: list[dict[str, Any]]) -> Process:
    args = [str(arg) for arg in process.get("args") or []]
    if args[:1] == [DOCKER_INIT]:
        args = args[2:] if args[1:2] == ["--"] else args[1:]
    if not args:
        raise BundleError("no command: the image has no CMD or ENTRYPOINT and none was given")
    guest = process_from_oci(process, args)
    _check_command(args[0], guest.env, image_root, mounts)
    return guest


def _check_command(command: str, env: list[str], image_root: Path, mounts: list[dict[str, Any]]) -> None:
    """Refuse a command the image does not have, in runc's words (docker run then exits 127)."""
    if "/" in command:
        candidates = [command]
    else:
        path = next((entry[5:] for entry in env if entry.startswith("PATH=")), "/usr/local/bin:/usr/bin:/bin")
        candidates = [f"{directory or '.'}/{command}" for directory in path.split(":")]
    mounted = [str(mount.get("destination", "")) for mount in mounts]
    for candidate in candidates:
        if any(candidate.startswith(dest.rstrip("/") + "/") for dest in mounted if dest not in ("", "/")):
            return  # on a volume: only the guest can tell
        found = resolve_in_root(image_root, candidate)
        if found is not None and found.is_file() and os.access(found, os.X_OK):
            return
    raise BundleError(f'exec: "{command}": executable file not found in $PATH')


def resolve_in_root(root: Path, path: str, *, max_links: int = 40) -> Path | None:
    """`path` as the guest would see it in `root`, symlinks followed inside root; None if absent."""
    parts = list(PurePosixPath("/", path).parts[1:])
    current = PurePosixPath("/")
    links = 0
    while parts:
        part = parts.pop(0)
        if part in (".", ""):
            continue
        if part == "..":
            current = current.parent
            continue
        host = root / str(current / part).lstrip("/")
        try:
            info = host.lstat()
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > max_links:
                return None
            target = str(host.readlink())
            parts = list(PurePosixPath(target).parts) + parts
            if target.startswith("/"):
                current = PurePosixPath("/")
                parts = parts[1:]
            continue
        current = current / part
    return root / str(current).lstrip("/")


# -- resources ----------------------------------------------------------------------------------


def guest_memory_mib(config: dict[str, Any]) -> int:
    """--memory covers the whole container: guest RAM is the limit minus QEMU's and our overhead."""
    limit = (((config.get("linux") or {}).get("resources") or {}).get("memory") or {}).get("limit")
    if not limit or int(limit) <= 0:
        return DEFAULT_MEMORY_MIB
    limit_mib = int(limit) // (1024 * 1024)
    guest = limit_mib - OVERHEAD_MIB
    minimum = MIN_GUEST_MEMORY_MIB + OVERHEAD_MIB
    if guest < MIN_GUEST_MEMORY_MIB:
        raise ConfigError(
            "--memory",
            f"{limit_mib}m",
            f"at least {minimum}m (a {MIN_GUEST_MEMORY_MIB} MiB guest + {OVERHEAD_MIB} MiB for QEMU)",
        )
    return guest


def guest_vcpus(config: dict[str, Any]) -> int:
    """--cpus N becomes ceil(N) vCPUs (the container's CPU quota still caps them); default 1."""
    cpu = ((config.get("linux") or {}).get("resources") or {}).get("cpu") or {}
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota and period and int(quota) > 0 and int(period) > 0:
        return max(1, math.ceil(int(quota) / int(period)))
    return 1


def _choice(settings: dict[str, str], name: str, accepted: tuple[str, ...], default: str) -> str:
    value = settings.get(name, "").strip().lower() or default
    if value not in accepted:
        raise ConfigError(name, settings[name], f"one of {', '.join(accepted)}")
    return value


def _flag(settings: dict[str, str], name: str) -> bool:
    value = settings.get(name, "")
    return bool(value.strip()) and flag_setting(name, value)  # set but empty: off


# -- mounts and devices -------------------------------------------------------------------------


def _mounts(
    mounts: list[dict[str, Any]], image_root: Path, paths: HostPaths, *, read_only: bool
) -> list[dict[str, Any]]:
    kept = [m for m in mounts if _container_level(str(m.get("destination", "")))]
    relocated = []
    for mount in mounts:
        destination = str(mount.get("destination", ""))
        if _container_level(destination):
            continue
        moved = copy.deepcopy(mount)
        moved["destination"] = VM_ROOTFS + "/" + destination.lstrip("/")
        relocated.append(moved)
    ours = [
        _bind(image_root, VM_ROOTFS, "ro" if read_only else "rw"),
        *relocated,
        _bind(paths.code, f"{CODE_DIR}/virtainer", "ro"),
        _bind(paths.guest, GUEST_DIR, "ro"),
        _bind(paths.run, RUN_DIR, "ro"),
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        _bind(paths.shared, SHARED_CACHE, "rw"),
    ]
    return kept + ours


def _container_level(destination: str) -> bool:
    return any(destination == top or destination.startswith(top + "/") for top in CONTAINER_LEVEL)


def _bind(source: Path, destination: str, mode: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source), "options": ["rbind", mode]}


def _add_devices(linux: dict[str, Any]) -> None:
    devices = linux.setdefault("devices", [])
    allowed = linux.setdefault("resources", {}).setdefault("devices", [])
    for path, major, minor in DEVICES:
        if not Path(path).exists() or any(device.get("path") == path for device in devices):
            continue
        devices.append(
            {"path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666, "uid": 0, "gid": 0}
        )
        allowed.append({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"})
