"""Snapshots never lose or confuse what is inside a diff (issue 8 §2), on the tiny guest under the
real libvirtd: a name already inside a (copied) diff is a 409, a domain moved to another diff
lists only that diff's snapshots, a revert keeps the VNC password, and a VM whose disks are on
SATA (the Windows profiles) snapshots its diff."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests.guests import TinyGuest, tiny_guest
from tests.tiny_vm import forgotten_afterwards, tiny_spec_of
from virtainer import machine, snapshots, storage
from virtainer.errors import ConflictError
from virtainer.hypervisor import Hypervisor
from virtainer.spec import VmSpec

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def tiny() -> TinyGuest:
    return tiny_guest()


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    with Hypervisor() as connection:
        yield connection


@pytest.fixture
def name() -> Iterator[str]:
    with forgotten_afterwards("snapsafe") as vm:
        yield vm


spec_of = tiny_spec_of


def started_then_stopped(hv: Hypervisor, spec: VmSpec) -> None:
    machine.up(spec, hv, wait=False)
    hv.destroy(spec.name)


def tags_inside(diff: Path) -> list[str]:
    return [str(item["name"]) for item in storage.image_info(diff).get("snapshots") or []]  # type: ignore[union-attr]


def test_sata_disks_are_snapshotted_and_a_name_inside_the_diff_is_a_conflict(
    tiny: TinyGuest, vm_dir: Path, hv: Hypervisor, name: str
) -> None:
    """Before: the diff was assumed to be `vda`, so on SATA (sda) no disk was included; and a name
    a copied diff already held became a second tag of that name."""
    spec = spec_of(tiny, name, vm_dir, disk_bus="sata")
    started_then_stopped(hv, spec)
    snapshots.create(hv, name, name="on-sata")
    assert tags_inside(spec.diff_path) == ["on-sata"]

    storage.qemu_img("snapshot", "-c", "teammate", str(spec.diff_path))  # as a copied diff carries it
    with pytest.raises(ConflictError, match="already holds an internal snapshot named 'teammate'"):
        snapshots.create(hv, name, name="teammate")
    assert tags_inside(spec.diff_path) == ["on-sata", "teammate"]


def test_another_diff_shows_only_its_own_snapshots(tiny: TinyGuest, vm_dir: Path, hv: Hypervisor, name: str) -> None:
    """Before: libvirt kept the first diff's snapshot records when the domain moved to a second."""
    first = spec_of(tiny, name, vm_dir, "first.qcow2")
    started_then_stopped(hv, first)
    snapshots.create(hv, name, name="of-first")
    second = spec_of(tiny, name, vm_dir, "second.qcow2")
    started_then_stopped(hv, second)
    assert snapshots.list_snapshots(hv, name) == []
    with pytest.raises(Exception, match="no snapshot"):
        snapshots.revert(hv, name, "of-first")
    started_then_stopped(hv, first)  # back on the first diff: its snapshot again, from the volume
    assert [snap.name for snap in snapshots.list_snapshots(hv, name)] == ["of-first"]
    assert tags_inside(first.diff_path) == ["of-first"] and tags_inside(second.diff_path) == []


def vnc_password(xml: str) -> str | None:
    graphics = etree.fromstring(xml.encode()).find("devices/graphics")
    return graphics.get("passwd") if graphics is not None else None


def test_revert_keeps_the_vnc_password(tiny: TinyGuest, vm_dir: Path, hv: Hypervisor, name: str) -> None:
    """Before: a revert put back libvirt's snapshot copy of the definition, which lacks secrets."""
    spec = spec_of(tiny, name, vm_dir, vnc="auto", vnc_password="s3cret", video="vga")
    machine.up(spec, hv, wait=False)
    snapshots.create(hv, name, name="live", kind="disk")  # running: QEMU takes it, libvirt records it
    snapshots.revert(hv, name, "live")  # a running VM is restarted on the snapshot's disk
    assert vnc_password(hv.xml(name, inactive=True, secure=True)) == "s3cret"
    assert vnc_password(hv.xml(name, secure=True)) == "s3cret"  # the VNC server running now, too
    hv.destroy(name)
    machine.up(spec, hv, wait=False)  # a new start: its snapshots restored from the volume
    hv.destroy(name)
    snapshots.revert(hv, name, "live")
    assert vnc_password(hv.xml(name, inactive=True, secure=True)) == "s3cret"
