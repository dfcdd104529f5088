"""Memory QEMU holds that a running runtime VM never reads again, handed back to the host kernel.

- The guest kernel: QEMU keeps its ELF segments mapped from the file (~15 MiB of page cache in its
  RSS, the largest part of its memory after TCG's cache) to copy them into guest RAM again at a
  reset, which our VMs never do: a reboot ends the container (on_reboot destroy).
- Relocation tables: the dynamic linker reads each binary's and library's `.rela.dyn` once, at
  start-up, to fill in addresses (~5 MiB for QEMU, libcapstone and libcrypto), and never again.
Once the VM runs, both are paged out (process_madvise MADV_PAGEOUT): clean file pages, dropped
from memory, read from their file again should QEMU ever touch them (~20 ms here for the next
VM's boot to read the kernel back). Pages another process maps too stay, shared. Best effort: a
refusal costs memory, not the run.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from virtainer.runtime.plan import qemu_pidfile

MADV_PAGEOUT = 21
SYS_PROCESS_MADVISE = 440  # the same number on every architecture (the unified syscall table)
IOV_MAX = 1024
PAGE = os.sysconf("SC_PAGE_SIZE")
ELF64_LITTLE = b"\x7fELF\x02\x01"
LOAD_TIME_ONLY = (b".rela.dyn",)  # .rela.plt stays: a library bound lazily reads it at each first call


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int  # of start in the file
    path: str

    def addresses(self, file_start: int, file_end: int) -> tuple[int, int] | None:
        """The whole pages of this mapping that hold file bytes [file_start, file_end)."""
        first = self.start + max(file_start - self.offset, 0)
        last = min(self.start + file_end - self.offset, self.end)
        first, last = -(-first // PAGE) * PAGE, last // PAGE * PAGE
        return (first, last - first) if last > first else None


def file_mappings(maps: str) -> list[Mapping]:
    """The file-backed mappings of a /proc/PID/maps text."""
    found = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, end = (int(address, 16) for address in fields[0].split("-"))
            found.append(Mapping(start, end, int(fields[2], 16), fields[5]))
    return found


def mapped_ranges(maps: str, path: Path) -> list[tuple[int, int]]:
    """(start, length) of each mapping of path."""
    return [(one.start, one.end - one.start) for one in file_mappings(maps) if one.path == str(path)]


def load_time_sections(path: str) -> list[tuple[int, int]]:
    """[file start, file end) of each LOAD_TIME_ONLY section of a 64-bit little-endian ELF file
    (none for anything else)."""
    try:
        with open(path, "rb") as elf:  # noqa: PTH123
            header = elf.read(64)
            if len(header) < 64 or not header.startswith(ELF64_LITTLE):
                return []
            table, entry_size, count, names_index = struct.unpack_from("<Q10xHHH", header, 0x28)
            elf.seek(table)
            entries = elf.read(entry_size * count)
            names_offset, names_size = struct.unpack_from("<QQ", entries, names_index * entry_size + 24)
            elf.seek(names_offset)
            names = elf.read(names_size)
    except (OSError, struct.error):
        return []
    sections = []
    for index in range(count):
        name, offset, size = struct.unpack_from("<I20xQQ", entries, index * entry_size)
        if names[name : names.find(b"\0", name)] in LOAD_TIME_ONLY:
            sections.append((offset, offset + size))
    return sections


def load_time_ranges(maps: str) -> list[tuple[int, int]]:
    """(start, length) of the pages of each mapped ELF file's LOAD_TIME_ONLY sections."""
    mappings = file_mappings(maps)
    ranges = []
    for path in dict.fromkeys(one.path for one in mappings if Path(one.path).is_file()):
        for file_start, file_end in load_time_sections(path):
            for one in mappings:
                if one.path == path and (pages := one.addresses(file_start, file_end)):
                    ranges.append(pages)
    return ranges


def page_out(pid: int, ranges: list[tuple[int, int]]) -> int:
    """Page out these (start, length) ranges of process pid; the bytes of address space advised
    (0: none, or refused). Needs CAP_SYS_NICE and ptrace-read access to pid."""
    if not ranges:
        return 0
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return 0
    try:
        batches = (ranges[at : at + IOV_MAX] for at in range(0, len(ranges), IOV_MAX))
        return sum(_process_madvise(pidfd, batch, MADV_PAGEOUT) for batch in batches)
    finally:
        os.close(pidfd)


def _process_madvise(pidfd: int, ranges: list[tuple[int, int]], advice: int) -> int:
    import ctypes  # here, not at the top: the launcher's imports are on `docker run`'s path

    class IoVec(ctypes.Structure):
        _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))

    vector = (IoVec * len(ranges))(*(IoVec(start, length) for start, length in ranges))
    advised = ctypes.CDLL(None).syscall(SYS_PROCESS_MADVISE, pidfd, vector, len(ranges), advice, 0)
    return max(0, int(advised))


def release_unused_pages(domain: str, kernel: Path) -> int:
    """Page the guest kernel and the relocation tables out of the domain's QEMU (libvirt's pid
    file says which process that is): QEMU has copied the kernel into guest RAM by the time
    libvirt has started it, paused."""
    try:
        pid = int(qemu_pidfile(domain).read_text())
        maps = Path(f"/proc/{pid}/maps").read_text()
    except (OSError, ValueError):
        return 0
    return page_out(pid, mapped_ranges(maps, kernel) + load_time_ranges(maps))
