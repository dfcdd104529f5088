"""The NIC's MAC: decided once per start, recorded beside the diff, so a guest OS keeps its NIC
when the diff is used again, mounted elsewhere, or copied to a teammate with its records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from virtainer import nic
from virtainer.errors import ImageError
from virtainer.nic import default_mac
from virtainer.spec import ImageSource, NetworkSpec, VmSpec, spec_with


def spec_at(diff: Path, **changes: object) -> VmSpec:
    spec = VmSpec(name="vm", vcpus=1, memory_mib=256, image=ImageSource(path=Path("/base.qcow2")),
                  diff_path=diff, state_dir=diff.parent / "state")  # fmt: skip
    return spec_with(spec, **changes)


def test_a_new_diff_gets_a_random_mac_and_keeps_the_recorded_one(tmp_path: Path) -> None:
    spec = spec_at(tmp_path / "local_image.qcow2")
    first, second = nic.nic_mac(spec), nic.nic_mac(spec)
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", first) and first != second  # random: decide once
    assert nic.save_mac(spec, first) is True
    assert json.loads(spec.nic_record_path.read_text()) == {"mac": first}
    assert nic.save_mac(spec, second) is False  # recorded once, never replaced
    assert nic.nic_mac(spec) == first
    # the setting wins for a start, without changing the record
    assert nic.nic_mac(spec_with(spec, mac_address="52:54:00:00:00:07")) == "52:54:00:00:00:07"
    assert nic.saved_mac(spec) == first


def test_a_copied_diff_keeps_its_mac_wherever_it_is_mounted(tmp_path: Path) -> None:
    original = spec_at(tmp_path / "a" / "local_image.qcow2")
    original.diff_path.parent.mkdir()
    original.diff_path.write_bytes(b"QFI\xfb")
    mac = nic.nic_mac(original)
    nic.save_mac(original, mac)
    copy = spec_at(tmp_path / "b" / "elsewhere.qcow2")
    copy.diff_path.parent.mkdir()
    for source, target in ((original.diff_path, copy.diff_path), (original.nic_record_path, copy.nic_record_path)):
        target.write_bytes(source.read_bytes())
    assert nic.nic_mac(copy) == mac
    assert default_mac(copy) != default_mac(original)  # what a path-derived MAC would have done


def test_a_diff_made_before_records_keeps_the_path_derived_mac(tmp_path: Path) -> None:
    spec = spec_at(tmp_path / "local_image.qcow2")
    spec.diff_path.write_bytes(b"QFI\xfb")
    assert nic.nic_mac(spec) == default_mac(spec)


def test_with_nic_mac_leaves_a_vm_without_nic_alone(tmp_path: Path) -> None:
    spec = spec_at(tmp_path / "d.qcow2", network=NetworkSpec("none", ""))
    assert nic.with_nic_mac(spec).mac_address is None
    assert nic.with_nic_mac(spec_at(tmp_path / "d.qcow2")).mac_address is not None


def test_a_broken_record_is_an_error_naming_it(tmp_path: Path) -> None:
    spec = spec_at(tmp_path / "d.qcow2")
    spec.nic_record_path.write_text("{not json")
    with pytest.raises(ImageError, match=r"d\.qcow2\.nic\.json"):
        nic.nic_mac(spec)
