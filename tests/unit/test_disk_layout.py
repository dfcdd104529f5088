"""growpart's work read from an image's partition table: MBR and GPT, full disks, room, doubt."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from virtainer import machine, storage
from virtainer.disk_layout import HEAD_BYTES, SECTOR, PartitionTable, parse_partition_table, read_partition_table
from virtainer.spec import HostFacts, RawValue, VmSpec, resolve_spec

MIB = 2**20
LINUX_GUID = bytes.fromhex("af3dc60f838472478e793d69d8477de4")  # 0FC63DAF-8483-4772-8E79-3D69D8477DE4


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTAINER_CACHE_DIR", str(tmp_path / "cache"))


def mbr(*partitions: tuple[int, int, int]) -> bytes:
    """A disk head with these (type, first sector, sectors) MBR entries."""
    head = bytearray(HEAD_BYTES)
    for index, (kind, start, size) in enumerate(partitions):
        struct.pack_into("<B3xII", head, 446 + 16 * index + 4, kind, start, size)
    head[510:512] = b"\x55\xaa"
    return bytes(head)


def gpt(*extents: tuple[int, int]) -> bytes:
    """A protective MBR and a GPT with these (first, last inclusive) Linux partitions."""
    head = bytearray(mbr((0xEE, 1, 0xFFFFFFFF)))
    head[SECTOR : SECTOR + 8] = b"EFI PART"
    struct.pack_into("<QII", head, SECTOR + 72, 2, 128, 128)
    for index, (first, last) in enumerate(extents):
        offset = 2 * SECTOR + 128 * index
        head[offset : offset + 16] = LINUX_GUID
        struct.pack_into("<QQ", head, offset + 32, first, last)
    return bytes(head)


def test_a_partition_that_fills_the_disk_cannot_grow() -> None:
    table = parse_partition_table(mbr((0x83, 2048, 4192256)))
    assert table == PartitionTable(gpt=False, extents=((2048, 4194304),))
    assert not table.may_grow_on(2048 * MIB)
    assert not table.may_grow_on(2048 * MIB + MIB - SECTOR)  # less than growpart's 1 MiB
    assert table.may_grow_on(2048 * MIB + MIB)
    assert table.may_grow_on(4096 * MIB)


def test_room_between_partitions_or_a_table_beyond_the_disk_may_grow() -> None:
    gap = parse_partition_table(mbr((0x83, 2048, 2048), (0x83, 8192, 4186112)))
    assert gap is not None and gap.may_grow_on(2048 * MIB)
    beyond = parse_partition_table(mbr((0x83, 2048, 4192256)))
    assert beyond is not None and beyond.may_grow_on(1024 * MIB)  # a table bigger than the disk: unsure


def test_gpt_keeps_room_for_its_backup_at_the_end() -> None:
    sectors = 2048 * MIB // SECTOR
    full = parse_partition_table(gpt((2048, sectors - 34)))
    assert full == PartitionTable(gpt=True, extents=((2048, sectors - 33),))
    assert not full.may_grow_on(2048 * MIB)
    assert full.may_grow_on(3072 * MIB)


@pytest.mark.parametrize(
    "head",
    [
        bytes(HEAD_BYTES),  # no boot signature
        mbr((0x83, 2048, 1000), (0x05, 4096, 1000)),  # logical partitions in an extended one
        mbr(),  # a signature and no partition
        mbr((0xEE, 1, 0xFFFFFFFF)),  # protective MBR without a GPT header
        mbr((0x83, 2048, 1000))[:1024],  # too short
    ],
)
def test_tables_this_module_cannot_read_with_certainty_are_none(head: bytes) -> None:
    assert parse_partition_table(head) is None


def test_the_table_is_read_from_a_qcow2_image(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(mbr((0x83, 2048, 129024)) + bytes(64 * MIB - HEAD_BYTES))
    image = tmp_path / "disk.qcow2"
    storage.qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    assert read_partition_table(image, "qcow2") == PartitionTable(gpt=False, extents=((2048, 131072),))
    assert read_partition_table(tmp_path / "missing.qcow2", "qcow2") is None


def base_and_spec(tmp_path: Path, partition_sectors: int, **settings: object) -> tuple[Path, VmSpec]:
    """A 64 MiB base with one partition of this size, and a spec for a diff on it."""
    tmp_path.mkdir()
    raw = tmp_path / "base.raw"
    raw.write_bytes(mbr((0x83, 2048, partition_sectors)) + bytes(64 * MIB - HEAD_BYTES))
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(base)], check=True)
    values = {"image": str(base), "diff": str(tmp_path / "vm" / "diff.qcow2"), **settings}
    return base, resolve_spec({key: RawValue(value, key) for key, value in values.items()}, HostFacts(2, 4096))


def disk_config(base: Path, spec: VmSpec, *, diff_exists: bool = False) -> dict[str, object] | None:
    return machine.disk_cloud_config(spec, base, storage.base_identity(base), diff_exists)


def test_growpart_is_off_only_when_the_disk_leaves_no_room(tmp_path: Path) -> None:
    assert disk_config(*base_and_spec(tmp_path / "full", 129024)) == {"growpart": {"mode": "off"}}
    assert disk_config(*base_and_spec(tmp_path / "room", 64000)) is None
    assert disk_config(*base_and_spec(tmp_path / "grown", 129024, disk_size="1G")) is None


def test_a_persisted_diff_is_judged_by_its_own_size(tmp_path: Path) -> None:
    base, spec = base_and_spec(tmp_path / "disk", 129024)
    storage.prepare_diff(spec, base, storage.base_identity(base))
    assert disk_config(base, spec, diff_exists=True) == {"growpart": {"mode": "off"}}
    storage.grow_diff(spec.diff_path, 128)  # grown by an earlier start with a bigger disk_size
    assert disk_config(base, spec, diff_exists=True) is None
