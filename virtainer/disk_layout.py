"""Whether cloud-init's growpart can find anything to grow on a disk, from its image's partitions.

cloud-init runs growpart on every boot, before sshd: under TCG `growpart --dry-run` alone takes
about 2 s of a 60 s boot, most of it processes that report NOCHANGE. When no partition of the
base image has room behind it on the VM's disk, virtainer tells cloud-init to skip it. A table
this module cannot read with certainty (extended MBR partitions, an unusual GPT, none at all)
counts as "may grow": cloud-init then runs growpart as it always did.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
# growpart (cloud-utils) leaves a partition alone that could grow by less than 1 MiB.
GROWPART_FUDGE_SECTORS = 2048
HEAD_BYTES = 34 * SECTOR  # MBR, GPT header, 128 entries of 128 bytes
_GPT_BACKUP_SECTORS = 33  # the backup header and its entries at the disk's end
_MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
_MBR_PROTECTIVE_TYPE = 0xEE


@dataclass(frozen=True)
class PartitionTable:
    gpt: bool
    extents: tuple[tuple[int, int], ...]  # (first sector, one past the last), by first sector

    def may_grow_on(self, disk_bytes: int) -> bool:
        """True when some partition has room behind it on a disk of this size."""
        usable_end = disk_bytes // SECTOR - (_GPT_BACKUP_SECTORS if self.gpt else 0)
        following = [start for start, _ in self.extents[1:]] + [usable_end]
        return any(
            end > usable_end or room_until - end >= GROWPART_FUDGE_SECTORS
            for (_, end), room_until in zip(self.extents, following, strict=True)
        )


def parse_partition_table(head: bytes) -> PartitionTable | None:
    """The partitions of an MBR or GPT disk's first HEAD_BYTES; None when unsure."""
    if len(head) < HEAD_BYTES or head[510:512] != b"\x55\xaa":
        return None
    gpt = head[446 + 4] == _MBR_PROTECTIVE_TYPE
    extents = _gpt_extents(head) if gpt else _mbr_extents(head)
    return PartitionTable(gpt, tuple(sorted(extents))) if extents else None


def _mbr_extents(head: bytes) -> list[tuple[int, int]] | None:
    extents = []
    for index in range(4):
        entry = head[446 + 16 * index : 446 + 16 * (index + 1)]
        start, size = struct.unpack_from("<II", entry, 8)
        if entry[4] in _MBR_EXTENDED_TYPES:
            return None  # logical partitions live in a chain this module does not follow
        if entry[4] != 0 and size != 0:
            extents.append((start, start + size))
    return extents


def _gpt_extents(head: bytes) -> list[tuple[int, int]] | None:
    if head[SECTOR : SECTOR + 8] != b"EFI PART":
        return None
    entries_lba, count, entry_size = struct.unpack_from("<QII", head, SECTOR + 72)
    if entries_lba != 2 or entry_size != 128 or 2 * SECTOR + count * entry_size > HEAD_BYTES:
        return None  # an unusual layout: not worth guessing
    extents = []
    for index in range(count):
        entry = head[2 * SECTOR + index * entry_size : 2 * SECTOR + (index + 1) * entry_size]
        if entry[:16] != bytes(16):  # an all-zero type GUID marks an unused entry
            first, last = struct.unpack_from("<QQ", entry, 32)
            extents.append((first, last + 1))
    return extents


def read_partition_table(image: Path, image_format: str) -> PartitionTable | None:
    """The partition table of an image in any format qemu-img reads (one `qemu-img dd`)."""
    with tempfile.NamedTemporaryFile(prefix="virtainer-head-") as out:
        done = subprocess.run(
            ["qemu-img", "dd", "-U", "-f", image_format, "-O", "raw", f"bs={SECTOR}",
             f"count={HEAD_BYTES // SECTOR}", f"if={image}", f"of={out.name}"],
            capture_output=True, check=False,
        )  # fmt: skip
        return parse_partition_table(Path(out.name).read_bytes()) if done.returncode == 0 else None
