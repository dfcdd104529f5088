"""Memory QEMU holds that a running runtime VM never uses again, handed back to the host kernel.

QEMU keeps the guest kernel's ELF segments mapped from the file (~15 MiB of page cache in its RSS,
the largest part of its memory after TCG's cache) to copy them into guest RAM again at a reset,
which our VMs never do: a reboot ends the container (on_reboot destroy). Once the VM runs they are
paged out (process_madvise MADV_PAGEOUT): clean file pages, dropped from memory, read from the file
again should QEMU ever need them (~20 ms here for the next VM's boot to read the file back). Pages
another VM still maps are left alone by the kernel. Best effort: a refusal costs memory, not the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from virtainer.runtime.plan import EMBED_ROOT

MADV_PAGEOUT = 21
SYS_PROCESS_MADVISE = 440  # the same number on every architecture (the unified syscall table)
IOV_MAX = 1024


def mapped_ranges(maps: str, path: Path) -> list[tuple[int, int]]:
    """(start, length) of each mapping of path in a /proc/PID/maps text."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = (int(address, 16) for address in fields[0].split("-"))
            ranges.append((start, end - start))
    return ranges[:IOV_MAX]


def page_out(pid: int, path: Path) -> int:
    """Page out process pid's mappings of path; the bytes of address space advised (0: none, or
    refused). Needs CAP_SYS_NICE and ptrace-read access to pid."""
    try:
        ranges = mapped_ranges(Path(f"/proc/{pid}/maps").read_text(), path)
        if not ranges:
            return 0
        pidfd = os.pidfd_open(pid)
    except OSError:
        return 0
    try:
        return _process_madvise(pidfd, ranges, MADV_PAGEOUT)
    finally:
        os.close(pidfd)


def _process_madvise(pidfd: int, ranges: list[tuple[int, int]], advice: int) -> int:
    import ctypes  # here, not at the top: the launcher's imports are on `docker run`'s path

    class IoVec(ctypes.Structure):
        _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))

    vector = (IoVec * len(ranges))(*(IoVec(start, length) for start, length in ranges))
    advised = ctypes.CDLL(None).syscall(SYS_PROCESS_MADVISE, pidfd, vector, len(ranges), advice, 0)
    return max(0, int(advised))


def release_guest_kernel(domain: str, kernel: Path) -> int:
    """Page out the kernel from the domain's QEMU (libvirt's pid file says which process that is):
    QEMU has copied it into guest RAM by the time libvirt has started it, paused."""
    try:
        pid = int((Path(EMBED_ROOT) / "run" / "qemu" / f"{domain}.pid").read_text())
    except (OSError, ValueError):
        return 0
    return page_out(pid, kernel)
