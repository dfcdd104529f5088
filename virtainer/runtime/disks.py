"""RUNCVM_DISKS in the container: each backing file found, or created, formatted and filled.

Runs in the launcher, where the image's root filesystem (volumes included) is at VM_ROOTFS: a
disk's PATH is a path in that root, symlinks followed inside it, never out of it. A missing file
is created sparse (raw) with its SIZE and, with a filesystem, formatted by mke2fs from the
directory it will be mounted on (RunCVM's "prepopulated"), as RunCVM does; an existing file is
used as it is, whatever it holds (raw, or a qcow2 image without a backing file).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path, PurePosixPath

from virtainer.errors import ConfigError
from virtainer.runtime.bundle import resolve_in_root
from virtainer.runtime.plan import Disk
from virtainer.runtime.vm import AttachedDisk

SETTING = "RUNCVM_DISKS"
QCOW2_MAGIC = b"QFI\xfb"
MKFS_TIMEOUT_S = 300


def attach_disks(disks: tuple[Disk, ...], rootfs: Path) -> tuple[AttachedDisk, ...]:
    return tuple(_attach(disk, rootfs) for disk in disks)


def _attach(disk: Disk, rootfs: Path) -> AttachedDisk:
    found = resolve_in_root(rootfs, disk.path)
    if found is None or not found.exists():
        if disk.size_mib is None:
            raise ConfigError(SETTING, disk.path, "an existing file, or give a SIZE to create it with")
        found = _directory_in_root(rootfs, str(PurePosixPath(disk.path).parent)) / PurePosixPath(disk.path).name
        _create(found, disk, rootfs)
    elif not found.is_file():
        raise ConfigError(SETTING, disk.path, "a regular file (a disk image), not a directory or device")
    return AttachedDisk(source=found, format=_format(found, disk.path), serial=disk.serial)


def _directory_in_root(rootfs: Path, path: str) -> Path:
    """The directory `path` of the image's root (made when missing), symlinks resolved inside it."""
    current = PurePosixPath("/")
    for part in PurePosixPath(path).parts[1:]:
        parent = resolve_in_root(rootfs, str(current))
        current = current / part
        if resolve_in_root(rootfs, str(current)) is None and parent is not None:
            (parent / part).mkdir(mode=0o755)
    directory = resolve_in_root(rootfs, str(current))
    if directory is None or not directory.is_dir():
        raise ConfigError(SETTING, path, "a directory in the container for the disk's file")
    return directory


def _create(path: Path, disk: Disk, rootfs: Path) -> None:
    """A new sparse file, formatted; removed again when formatting fails (it is ours, not the user's)."""
    assert disk.size_mib is not None
    with path.open("xb") as stream:
        stream.truncate(disk.size_mib << 20)
    if not disk.filesystem:
        return
    command = ["mke2fs", "-q", "-F", "-t", disk.filesystem]
    source = resolve_in_root(rootfs, disk.mount) if disk.mount else None
    if source is not None and source.is_dir():
        command += ["-d", str(source)]
    done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=MKFS_TIMEOUT_S, check=False)
    if done.returncode != 0:
        with contextlib.suppress(OSError):
            os.unlink(path)
        last = (done.stderr.strip().splitlines() or ["mke2fs failed"])[-1]
        raise ConfigError(SETTING, disk.path, f"a disk mke2fs can format ({last})")


def _format(path: Path, shown: str) -> str:
    with path.open("rb") as stream:
        header = stream.read(16)
    if header[:4] != QCOW2_MAGIC:
        return "raw"
    if int.from_bytes(header[8:16], "big"):  # a backing file's name: QEMU would open another file
        raise ConfigError(SETTING, shown, "a raw disk or a qcow2 image without a backing file")
    return "qcow2"
