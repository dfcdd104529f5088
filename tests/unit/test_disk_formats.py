"""Disk formats are recorded, never probed again, and no backing chain is declared but the diff's
own base (issue 8 §3), with the real qemu-img and the real renderer.

Before: data disk formats were probed from their contents at every start, and QEMU runs as root:
a guest that wrote a qcow2 header naming a host file into its raw data disk got that file."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from tests.unit.test_storage import make_base
from virtainer import machine, storage
from virtainer.errors import ConfigError
from virtainer.spec import DataDisk, HostFacts, RawValue, VmSpec, resolve_spec, spec_with


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTAINER_CACHE_DIR", str(tmp_path / "cache"))


def spec_with_disk(tmp_path: Path, disk: Path) -> VmSpec:
    raw = {"image": str(make_base(tmp_path / "base.qcow2")), "diff": str(tmp_path / "vm" / "diff.qcow2"),
           "state_dir": str(tmp_path / "state"), "network": "none", "disks": [str(disk)]}  # fmt: skip
    return resolve_spec({key: RawValue(value, key) for key, value in raw.items()}, HostFacts(2, 4096))


def start(spec: VmSpec) -> machine.Plan:
    """What `up` does on disk before it defines the domain."""
    plan = machine.plan_up(spec, None, machine.QuietReporter())
    machine._write_vm_files(plan, machine.QuietReporter())
    return plan


def write_qcow2_header_naming(disk: Path, host_file: Path, scratch: Path) -> None:
    """What a hostile guest can do to its raw disk: write a qcow2 header whose backing file is a host file."""
    header = scratch / "header.qcow2"
    storage.qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(host_file), str(header), "1M")
    with disk.open("r+b") as stream:
        stream.write(header.read_bytes())


def disk_element(xml: str, path: Path) -> etree._Element:
    for disk in etree.fromstring(xml.encode()).iterfind("devices/disk"):
        if disk.find("source").get("file") == str(path):
            return disk
    raise AssertionError(f"no disk {path}")


def test_a_raw_disk_the_guest_rewrote_as_qcow2_stays_raw(tmp_path: Path) -> None:
    secret = tmp_path / "api-token"
    secret.write_text("HOST-SECRET\n")
    disk = tmp_path / "data.raw"
    disk.write_bytes(bytes(4 << 20))
    spec = spec_with_disk(tmp_path, disk)
    assert start(spec).disk_formats[disk] == "raw"  # first attach: probed once, recorded

    write_qcow2_header_naming(disk, secret, tmp_path)
    assert storage.image_info(disk)["backing-filename"] == str(secret)  # what probing would now see
    plan = start(spec)
    assert plan.disk_formats[disk] == "raw"
    element = disk_element(plan.domain_xml(), disk)
    assert element.find("driver").get("type") == "raw"
    backing = element.find("backingStore")
    assert backing is not None and len(backing) == 0  # declared: no backing chain at all


def test_the_diffs_own_base_is_the_only_backing_chain_declared(tmp_path: Path) -> None:
    disk = tmp_path / "data.qcow2"
    spec = spec_with_disk(tmp_path, disk)
    spec = spec_with(spec, data_disks=(DataDisk(disk, 16),))
    plan = start(spec)
    xml = plan.domain_xml()
    system = disk_element(xml, spec.diff_path).find("backingStore")
    assert system.get("type") == "file"
    assert (system.find("format").get("type"), system.find("source").get("file")) == ("qcow2", str(plan.base))
    assert len(system.find("backingStore")) == 0  # the base itself has none
    assert len(disk_element(xml, disk).find("backingStore")) == 0
    assert storage.read_disk_formats(spec) == {str(disk): "qcow2"}


def test_a_qcow2_disk_that_now_names_a_backing_file_is_refused(tmp_path: Path) -> None:
    disk = tmp_path / "data.qcow2"
    storage.qemu_img("create", "-q", "-f", "qcow2", str(disk), "16M")
    spec = spec_with_disk(tmp_path, disk)
    start(spec)
    host_file = tmp_path / "elsewhere.raw"
    host_file.write_bytes(bytes(1 << 20))
    storage.qemu_img("rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", str(host_file), str(disk))
    with pytest.raises(ConfigError) as caught:
        start(spec)
    message = str(caught.value)
    assert message.startswith("invalid disks=") and str(host_file) in message and "\n" not in message


def test_a_first_attached_overlay_is_refused(tmp_path: Path) -> None:
    host_file = tmp_path / "elsewhere.raw"
    host_file.write_bytes(bytes(1 << 20))
    disk = tmp_path / "overlay.qcow2"
    storage.qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(host_file), str(disk))
    with pytest.raises(ConfigError, match="which virtainer did not create"):
        start(spec_with_disk(tmp_path, disk))
    assert not storage.read_disk_formats(spec_with_disk(tmp_path, disk))
