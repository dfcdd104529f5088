"""Paging a file out of another process (what the launcher does to QEMU's copy of the guest
kernel), on a real process: its mapping's pages leave its RSS, and it reads the same bytes after."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtainer.runtime.qemu_memory import mapped_ranges, page_out

# maps the file privately, as QEMU maps the kernel's ELF, reads every page, then on each line on
# stdin answers with a checksum of the mapping (read again: paged out pages come back from the file)
MAPPER = """
import mmap, sys, zlib
with open(sys.argv[1], "rb") as file:
    mapped = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
zlib.crc32(mapped)
for _ in sys.stdin:
    print(zlib.crc32(mapped), flush=True)
"""
SIZE = 8 << 20


def resident_kib(pid: int, path: Path) -> int:
    resident, in_file = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            in_file = len(fields) == 6 and fields[5] == str(path)
        elif in_file and fields[0] == "Rss:":
            resident += int(fields[1])
    return resident


@pytest.fixture
def mapper(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    path = tmp_path / "kernel"
    with path.open("wb") as file:
        file.write(os.urandom(SIZE))
        os.fsync(file.fileno())  # clean pages, as the kernel's are: dirty ones wait for writeback
    process = subprocess.Popen([sys.executable, "-c", MAPPER, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdin and process.stdout
    try:
        yield process, path
    finally:
        process.kill()
        process.wait()


def checksum(process: subprocess.Popen[str]) -> str:
    assert process.stdin and process.stdout
    process.stdin.write("\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def test_the_mapping_leaves_the_process_rss_and_reads_back_the_same(
    mapper: tuple[subprocess.Popen[str], Path],
) -> None:
    process, path = mapper
    before = checksum(process)
    assert resident_kib(process.pid, path) >= SIZE >> 10
    assert page_out(process.pid, path) >= SIZE
    assert resident_kib(process.pid, path) == 0
    assert checksum(process) == before


def test_nothing_mapped_or_no_process_is_no_error(tmp_path: Path) -> None:
    assert page_out(os.getpid(), tmp_path / "not-mapped") == 0
    assert page_out(2**22 + 1, tmp_path / "not-mapped") == 0  # above the kernel's pid_max


def test_mapped_ranges_are_those_of_the_path_only() -> None:
    maps = (
        "7f43b6c00000-7f43b7fb8000 rw-p 00000000 fe:00 1532094    /opt/virtainer/guest/vmlinux\n"
        "7f43b8000000-7f43b8001000 r--p 00000000 fe:00 1532094    /opt/virtainer/guest/vmlinux\n"
        "7f43df8a0000-7f43df8fc000 r--p 00000000 00:2f 12         /run/virtainer/initrd.img\n"
        "7f43de800000-7f43df7ff000 rwxp 00000000 00:00 0 \n"
        "7f43e0000000-7f43e0001000 r--p 00000000 fe:00 99         /opt/virtainer/guest/vmlinux.old\n"
    )
    assert mapped_ranges(maps, Path("/opt/virtainer/guest/vmlinux")) == [
        (0x7F43B6C00000, 0x13B8000),
        (0x7F43B8000000, 0x1000),
    ]
