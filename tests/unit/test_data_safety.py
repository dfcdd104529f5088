"""Nothing the user owns is lost: atomic files, the base record before the diff, no clobbering,
the diff lock on the host CLI, a user's state directory left as it was (real qemu-img)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.unit.test_storage import make_base, sha256
from virtainer import cli, machine, storage
from virtainer.errors import BaseMismatchError, ConflictError
from virtainer.exit_codes import EXIT_CONFLICT
from virtainer.files import write_atomic
from virtainer.snapshots import SnapshotStore
from virtainer.spec import HostFacts, RawValue, VmSpec, resolve_spec


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTAINER_CACHE_DIR", str(tmp_path / "cache"))


def spec_of(**values: object) -> VmSpec:
    return resolve_spec({key: RawValue(value, key) for key, value in values.items()}, HostFacts(2, 4096))


def test_atomic_write_never_follows_a_planted_temporary_name(tmp_path: Path) -> None:
    """Before: snapshots wrote `.NAME.tmp` with O_TRUNC, following a symlink planted there."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    store = SnapshotStore(tmp_path / "diff.qcow2")
    store.root.mkdir()
    for planted in (".s1.xml.tmp", ".s1.json.tmp"):
        (store.root / planted).symlink_to(victim)
    store.save("s1", "<domainsnapshot/>", {"vm_state": "running"})
    assert victim.read_text() == "precious\n"
    assert store.xml("s1") == "<domainsnapshot/>"
    assert stat.S_IMODE((store.root / "s1.xml").stat().st_mode) == 0o600


def test_atomic_write_leaves_no_temporary_file_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "record.json"
    write_atomic(target, "one\n", mode=0o640)
    write_atomic(target, "two\n", mode=0o640)
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(path.name for path in target.parent.iterdir()) == ["record.json"]
    with pytest.raises(FileExistsError):
        write_atomic(target, "three\n", replace=False)
    assert target.read_text() == "two\n"


def test_base_record_exists_before_the_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the diff was created first, so a failure writing the record left a diff that every
    later start refused ("has no record of its base image")."""
    base = make_base(tmp_path / "base.qcow2")
    spec = spec_of(image=str(base), diff=str(tmp_path / "vm" / "diff.qcow2"))
    identity = storage.base_identity(base)

    def fail(_record: storage.BaseRecord) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.BaseRecord, "to_json", fail)
    with pytest.raises(OSError):
        storage.prepare_diff(spec, base, identity)
    monkeypatch.undo()
    monkeypatch.setenv("VIRTAINER_CACHE_DIR", str(tmp_path / "cache"))
    assert not spec.diff_path.exists()
    assert storage.prepare_diff(spec, base, identity) is False  # the next start simply works
    assert storage.read_base_record(spec) is not None


def test_a_diff_made_meanwhile_is_never_clobbered(tmp_path: Path) -> None:
    """Before: the overlay was renamed over whatever had appeared at the diff's path."""
    base = make_base(tmp_path / "base.qcow2")
    diff = tmp_path / "diff.qcow2"
    diff.write_bytes(b"a teammate's diff")
    with pytest.raises(ConflictError, match="created by another start"):
        storage._create_overlay(diff, base, storage.base_identity(base))
    assert diff.read_bytes() == b"a teammate's diff"
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_a_data_disk_made_meanwhile_is_kept(tmp_path: Path) -> None:
    disk = tmp_path / "data.qcow2"
    assert storage.create_data_disk(disk, 16) is True
    before = sha256(disk)
    assert storage.create_data_disk(disk, 32) is False
    assert sha256(disk) == before


def test_cli_up_takes_the_containers_diff_lock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `virtainer up` took no lock, so it wrote a diff a container (or another up) held."""
    base = make_base(tmp_path / "base.qcow2")
    diff = tmp_path / "vm" / "diff.qcow2"
    holder = storage.DiffLock(diff)
    holder.acquire()
    try:
        code = cli.main([
            "--connect", "test:///default", "up", "locked-vm", "--image", str(base), "--diff", str(diff),
            "--state-dir", str(tmp_path / "state"), "--no-wait",
        ])  # fmt: skip
    finally:
        holder.release()
    assert code == EXIT_CONFLICT
    assert "in use by" in capsys.readouterr().err
    assert not diff.exists()
    assert not (tmp_path / "state").exists()


def test_an_existing_state_dir_keeps_its_mode(tmp_path: Path) -> None:
    """Before: `--state-dir /tmp` lost its sticky, world-writable 1777 (chmod 0755)."""
    base = make_base(tmp_path / "base.qcow2")
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    spec = spec_of(image=str(base), diff=str(tmp_path / "vm" / "diff.qcow2"), state_dir=str(shared), network="none")
    plan = machine.plan_up(spec, None, machine.QuietReporter())
    machine._write_vm_files(plan, machine.QuietReporter())
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    created = tmp_path / "new-state"
    spec = spec_of(image=str(base), diff=str(tmp_path / "vm2.qcow2"), state_dir=str(created), network="none")
    machine._write_vm_files(machine.plan_up(spec, None, machine.QuietReporter()), machine.QuietReporter())
    assert stat.S_IMODE(created.stat().st_mode) == 0o755  # one virtainer made: QEMU must reach it


def test_a_diff_without_record_is_still_refused(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base.qcow2")
    spec = spec_of(image=str(base), diff=str(tmp_path / "diff.qcow2"))
    storage.qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(spec.diff_path))
    with pytest.raises(BaseMismatchError):
        storage.prepare_diff(spec, base, storage.base_identity(base))


def test_a_killed_starts_temporary_files_are_removed_by_the_next(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base.qcow2")
    spec = spec_of(image=str(base), diff=str(tmp_path / "vm" / "diff.qcow2"), state_dir=str(tmp_path / "st"),
                   network="none")  # fmt: skip
    spec.diff_path.parent.mkdir()
    stale = spec.diff_path.with_name(".diff.qcow2.0123456789ab.tmp")  # a half-made overlay
    stale.write_bytes(b"half")
    unrelated = spec.diff_path.with_name(".diff.qcow2.not-ours.tmp")
    unrelated.write_bytes(b"someone's")
    machine._write_vm_files(machine.plan_up(spec, None, machine.QuietReporter()), machine.QuietReporter())
    assert not stale.exists() and unrelated.exists()
