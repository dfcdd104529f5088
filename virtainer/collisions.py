"""No two of a VM's files may be one file: writing one would destroy the other.

`virtainer up NAME --diff d.qcow2 --seed-path d.qcow2` once turned a diff into a seed ISO. Every
file a VM uses is listed here with the setting it comes from; two that resolve to the same file
(symlinks resolved; for files that exist, hard links too, by device and inode) are refused before
anything is written, when at least one of them is written (by virtainer or by the guest).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from virtainer.errors import ConfigError

if TYPE_CHECKING:
    from virtainer.spec.model import VmSpec


@dataclass(frozen=True)
class VmFile:
    setting: str  # as the user wrote it (--seed-path, CLOUD_INIT_DISK), with what the file is
    path: Path
    written: bool  # virtainer or the guest writes it; read-only inputs may coincide with each other


def check_distinct_files(spec: VmSpec, origin: Callable[[str], str]) -> None:
    """Raise ConfigError naming both settings when two of the VM's files are one file.

    `origin(key)` is the name the user gave a setting (or the key itself for a default)."""
    files = list(vm_files(spec, origin))
    seen: dict[tuple[object, ...], VmFile] = {}
    for item in files:
        for key in _identities(item.path):
            earlier = seen.get(key)
            if earlier is not None and (earlier.written or item.written):
                raise ConfigError(
                    item.setting, str(item.path),
                    f"the same file as {earlier.setting} ({earlier.path}); writing one would destroy "
                    "the other: give each its own path",
                )  # fmt: skip
            seen.setdefault(key, item)


def vm_files(spec: VmSpec, origin: Callable[[str], str]) -> Iterable[VmFile]:
    """Every file the VM uses, most precious first (a collision names the later one)."""
    diff_key = "storage_id" if spec.storage_dir else ("image_dir" if origin("image_dir") != "image_dir" else "diff")
    yield VmFile(origin(diff_key), spec.diff_path, True)
    if spec.image.path:
        yield VmFile(f"{origin('image')} (the base image)", spec.image.path, False)
    for disk in spec.data_disks:
        yield VmFile(origin("disks"), disk.path, True)
    for key in ("user_data", "meta_data", "network_config"):
        path = getattr(spec, key)
        if path is not None:
            yield VmFile(origin(key), path, False)
    if spec.direct_boot is not None:
        yield VmFile(origin("kernel"), spec.direct_boot.kernel, False)
        if spec.direct_boot.initrd is not None:
            yield VmFile(origin("initrd"), spec.direct_boot.initrd, False)
    if spec.uefi is not None:
        yield VmFile(f"{origin(diff_key)} (its UEFI NVRAM)", spec.nvram_path, True)
    if spec.seed_iso is not None:
        yield VmFile(origin("seed_iso"), spec.seed_iso, False)
    else:
        seed_key = "seed_path" if spec.seed_path else "state_dir"
        yield VmFile(f"{origin(seed_key)} (the generated seed ISO)", spec.generated_seed_path, True)
    state_files = {"serial log": spec.serial_log_path, "domain XML": spec.domain_xml_path,
                   "readiness record": spec.readiness_path}  # fmt: skip
    for what, path in state_files.items():
        yield VmFile(f"{origin('state_dir')} (its {what})", path, True)
    beside = {
        "base record": spec.base_record_path, "generated password": spec.password_path,
        "NIC record": spec.nic_record_path, "disk format record": spec.format_record_path,
        "lock": spec.files.lock, "snapshot records": spec.files.snapshots,
    }  # fmt: skip
    for what, path in beside.items():
        yield VmFile(f"{origin(diff_key)} (its {what})", path, True)


def _identities(path: Path) -> list[tuple[object, ...]]:
    """The resolved path, and (device, inode) when the file exists: a hard link is the same file."""
    keys: list[tuple[object, ...]] = [("path", os.path.realpath(path))]
    try:
        stat = path.stat()
    except OSError:
        return keys
    keys.append(("inode", stat.st_dev, stat.st_ino))
    return keys
