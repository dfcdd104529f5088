"""Paging memory out of another process, as the launcher does to QEMU's copy of the guest kernel
and to its relocation tables, on real processes: the pages leave their RSS, the process reads the
same bytes after and still links libraries; the ELF and maps parsing on their own."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtainer.runtime.qemu_memory import (
    PAGE,
    Mapping,
    file_mappings,
    load_time_ranges,
    load_time_sections,
    mapped_ranges,
    page_out,
)

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
    maps = Path(f"/proc/{process.pid}/maps").read_text()
    assert page_out(process.pid, mapped_ranges(maps, path)) >= SIZE
    assert resident_kib(process.pid, path) == 0
    assert checksum(process) == before


def test_a_process_whose_relocation_tables_are_paged_out_still_links_libraries() -> None:
    # on each line: load a C extension module not loaded yet (the dynamic linker at work)
    linker = (
        "import importlib, sys\nfor name in sys.stdin: importlib.import_module(name.strip()); print('ok', flush=True)"
    )
    process = subprocess.Popen([sys.executable, "-c", linker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin and process.stdout
    try:
        process.stdin.write("_json\n")
        process.stdin.flush()
        assert process.stdout.readline() == "ok\n"
        ranges = load_time_ranges(Path(f"/proc/{process.pid}/maps").read_text())
        assert ranges  # python3 and libc at least
        assert all(start % PAGE == 0 and length % PAGE == 0 for start, length in ranges)
        assert page_out(process.pid, ranges) == sum(length for _, length in ranges)
        for module in ("_decimal", "_ctypes"):
            process.stdin.write(f"{module}\n")
            process.stdin.flush()
            assert process.stdout.readline() == "ok\n"
    finally:
        process.kill()
        process.wait()


def test_nothing_to_page_out_or_no_process_is_no_error() -> None:
    assert page_out(os.getpid(), []) == 0
    assert page_out(2**22 + 1, [(0x7F0000000000, PAGE)]) == 0  # above the kernel's pid_max


def elf_with_sections(path: Path, sections: list[tuple[bytes, int, int]]) -> None:
    """A 64-bit little-endian ELF file with only these (name, offset, size) sections, the name
    table last."""
    names = b"\0" + b"".join(name + b"\0" for name, _, _ in sections) + b".shstrtab\0"
    table_offset = 0x1000
    entries = [b"\0" * 64]  # section 0 is null
    name_at = 1
    for name, offset, size in sections:
        entries.append(struct.pack("<IIQQQQIIQQ", name_at, 4, 2, 0, offset, size, 0, 0, 8, 24))
        name_at += len(name) + 1
    names_offset = table_offset + 64 * (len(sections) + 2)
    entries.append(struct.pack("<IIQQQQIIQQ", name_at, 3, 0, 0, names_offset, len(names), 0, 0, 1, 0))
    header = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, table_offset, 0, 64, 56, 0, 64, len(entries), len(entries) - 1)
    )
    path.write_bytes(header.ljust(table_offset, b"\0") + b"".join(entries) + names)


def test_load_time_sections_are_the_rela_dyn_ones(tmp_path: Path) -> None:
    elf = tmp_path / "libexample.so"
    elf_with_sections(elf, [(b".dynsym", 0x400, 0x100), (b".rela.dyn", 0x500, 0x3000), (b".rela.plt", 0x3500, 0x80)])
    assert load_time_sections(str(elf)) == [(0x500, 0x3500)]
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert load_time_sections(str(tmp_path / "script")) == []
    assert load_time_sections(str(tmp_path / "missing")) == []


def test_a_section_becomes_the_whole_pages_of_each_mapping_that_holds_it() -> None:
    first = Mapping(start=0x10000, end=0x14000, offset=0, path="/lib/x")
    second = Mapping(start=0x20000, end=0x30000, offset=0x4000, path="/lib/x")
    section = (0x1800, 0x6800)  # from the middle of the first's second page into the second's third
    assert first.addresses(*section) == (0x12000, 0x2000)
    assert second.addresses(*section) == (0x20000, 0x2000)
    assert Mapping(0x10000, 0x11000, 0, "/lib/x").addresses(0x100, 0x200) is None  # no whole page
    assert Mapping(0x10000, 0x11000, 0x8000, "/lib/x").addresses(*section) is None  # not in it


def test_file_mappings_and_mapped_ranges_of_one_path() -> None:
    maps = (
        "7f43b6c00000-7f43b7fb8000 rw-p 00000000 fe:00 1532094    /opt/virtainer/guest/vmlinux\n"
        "7f43b8000000-7f43b8001000 r--p 00000000 fe:00 1532094    /opt/virtainer/guest/vmlinux\n"
        "7f43df8a0000-7f43df8fc000 r--p 00000000 00:2f 12         /run/virtainer/initrd.img\n"
        "7f43de800000-7f43df7ff000 rwxp 00000000 00:00 0 \n"
        "7f43e0000000-7f43e0001000 r--p 00000000 fe:00 99         /opt/virtainer/guest/vmlinux.old\n"
    )
    assert [one.path for one in file_mappings(maps)].count("/run/virtainer/initrd.img") == 1
    assert len(file_mappings(maps)) == 4
    assert mapped_ranges(maps, Path("/opt/virtainer/guest/vmlinux")) == [
        (0x7F43B6C00000, 0x13B8000),
        (0x7F43B8000000, 0x1000),
    ]
