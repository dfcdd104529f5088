"""Two of a VM's files that are one file are refused before anything is written (issue 8 §2).

Before: `virtainer up NAME --diff d.qcow2 --seed-path d.qcow2` turned the qcow2 diff into a 66 KiB
raw ISO, and `CLOUD_INIT_DISK=/mounted/local_image.qcow2` did the same in the container."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.test_storage import make_base, sha256
from virtainer.errors import ConfigError
from virtainer.spec import HostFacts, RawValue, resolve_spec, settings_from_env

HOST = HostFacts(cpus=2, memory_mib=4096)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_base(tmp_path / "base.qcow2")


def refused(raw: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_spec({key: RawValue(value, key) for key, value in raw.items()}, HOST)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_cli_seed_path_on_the_diff_exits_2_and_writes_nothing(tmp_path: Path, base: Path) -> None:
    diff = tmp_path / "d.qcow2"
    diff.write_bytes(b"the user's diff")
    state = tmp_path / "state"
    command = [
        sys.executable, "-m", "virtainer.cli", "--connect", "test:///default", "up", "vm", "--no-wait",
        "--image", str(base), "--diff", str(diff), "--seed-path", str(diff), "--state-dir", str(state),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."},
                          check=False, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "--seed-path" in done.stderr and "--diff" in done.stderr
    assert diff.read_bytes() == b"the user's diff"
    assert not state.exists()


def test_container_cloud_init_disk_on_the_diff_is_refused(tmp_path: Path, base: Path) -> None:
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    environ = {"IMAGE": str(base), "IMAGE_DIR": str(mounted), "CLOUD_INIT_DISK": str(mounted / "local_image.qcow2")}
    with pytest.raises(ConfigError) as caught:
        resolve_spec(settings_from_env(environ), HostFacts(2, 4096, in_container=True))
    assert "CLOUD_INIT_DISK" in str(caught.value) and "IMAGE_DIR" in str(caught.value)


def test_a_symlink_to_the_diff_is_the_diff(tmp_path: Path, base: Path) -> None:
    diff = tmp_path / "vm" / "diff.qcow2"  # need not exist yet: the link resolves all the same
    diff.parent.mkdir()
    (tmp_path / "seed.iso").symlink_to(diff)
    message = refused({"image": str(base), "diff": str(diff), "seed_path": str(tmp_path / "seed.iso")})
    assert "seed_path" in message and "diff" in message


def test_a_hard_link_to_the_diff_is_the_diff(tmp_path: Path, base: Path) -> None:
    diff = tmp_path / "diff.qcow2"
    diff.write_bytes(b"diff")
    os.link(diff, tmp_path / "data.qcow2")
    message = refused({"image": str(base), "diff": str(diff), "disks": [str(tmp_path / "data.qcow2")]})
    assert "disks" in message and "diff" in message
    assert sha256(diff) == sha256(tmp_path / "data.qcow2")


@pytest.mark.parametrize(
    ("setting", "make_path", "named"),
    [
        ("disks", lambda tmp: tmp / "state" / "serial.log", "state_dir (its serial log)"),
        ("disks", lambda tmp: tmp / "state" / "domain.xml", "state_dir (its domain XML)"),
        ("disks", lambda tmp: tmp / "state" / "readiness.json", "state_dir (its readiness record)"),
        ("disks", lambda tmp: tmp / "vm.qcow2.base.json", "diff (its base record)"),
        ("disks", lambda tmp: tmp / "vm.qcow2.password", "diff (its generated password)"),
        ("disks", lambda tmp: tmp / "state" / "seed.iso", "state_dir (the generated seed ISO)"),
        ("seed_path", lambda tmp: tmp / "vm.qcow2.base.json", "diff (its base record)"),
        ("seed_path", lambda tmp: tmp / "state" / "serial.log", "state_dir (its serial log)"),
        ("seed_path", lambda tmp: tmp / "user-data", "user_data"),
    ],
)
def test_every_file_virtainer_writes_is_checked(
    tmp_path: Path, base: Path, setting: str, make_path: Callable[[Path], Path], named: str
) -> None:
    (tmp_path / "user-data").write_text("#cloud-config\n")
    path = make_path(tmp_path)
    raw: dict[str, object] = {
        "image": str(base), "diff": str(tmp_path / "vm.qcow2"),
        "state_dir": str(tmp_path / "state"), "user_data": str(tmp_path / "user-data"),
    }  # fmt: skip
    raw[setting] = [str(path)] if setting == "disks" else str(path)
    message = refused(raw)
    assert message.startswith(f"invalid {setting}") or setting in message
    assert named in message


def test_the_same_data_disk_twice_is_refused(tmp_path: Path, base: Path) -> None:
    disk = str(tmp_path / "data.qcow2")
    assert "disks" in refused({"image": str(base), "diff": str(tmp_path / "vm.qcow2"), "disks": [disk, disk]})


def test_read_only_inputs_may_be_one_file(tmp_path: Path, base: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    raw = {"image": str(base), "diff": str(tmp_path / "vm.qcow2"), "meta_data": str(empty),
           "network_config": str(empty)}  # fmt: skip
    resolve_spec({key: RawValue(value, key) for key, value in raw.items()}, HOST)
