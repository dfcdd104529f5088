"""Fault injection on real guests (issue 8, "Tests that must pass"), on the tiny guest under the
real libvirtd and QEMU: `virtainer up` SIGKILLed at each step of creating a diff
(VIRTAINER_TEST_CRASH_AT): the next `up` works, and no disk the user had is changed. SIGKILL of
the container during guest writes: tests/container/test_kill_container.py."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guests import TinyGuest, tiny_guest
from tests.tiny_cli import VIRTAINER, serial_log, tiny_up_args, virtainer
from tests.tiny_vm import assert_clean_qcow2, forgotten_afterwards, tiny_spec_of
from tests.waiting import wait_until
from virtainer import storage
from virtainer.faults import CRASH_AT_ENV

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def tiny() -> TinyGuest:
    return tiny_guest()


@pytest.fixture
def name() -> Iterator[str]:
    with forgotten_afterwards("faults") as vm:
        yield vm


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Each step `up` takes to create a diff, in order (the names of virtainer.faults.crash_point).
def creation_steps(diff: str, new_disk: str) -> list[str]:
    return [
        f"before-rename:{diff}.base.json", "base-recorded", f"before-rename:{diff}", "diff-created",
        f"before-rename:{new_disk}", "data-disk", f"before-rename:{diff}.formats.json",
        "before-rename:seed.iso", "seed", "before-rename:domain.xml", "defined",
    ]  # fmt: skip


def test_up_killed_at_each_step_of_creating_a_diff(tiny: TinyGuest, vm_dir: Path, name: str) -> None:
    kept = vm_dir / "kept.raw"  # a disk the user already has: never changed
    kept.write_bytes(b"the user's data\n" * 4096)
    kept_sha = sha256(kept)
    steps = creation_steps("diff-N.qcow2", "new-N.qcow2")
    for index, template in enumerate(steps):
        diff, new_disk = vm_dir / f"diff-{index}.qcow2", vm_dir / f"new-{index}.qcow2"
        step = template.replace("diff-N", diff.stem).replace("new-N", new_disk.stem)
        args = tiny_up_args(tiny, name, vm_dir)
        args[2:2] = ["--image", str(tiny.base_image), "--diff", str(diff),
                     "--disks", str(kept), "--disks", f"{new_disk},16M"]  # fmt: skip
        crashed = subprocess.run([*VIRTAINER, *args], capture_output=True, text=True, timeout=180,
                                 env={**os.environ, CRASH_AT_ENV: step}, check=False)  # fmt: skip
        assert crashed.returncode == -signal.SIGKILL, f"step {step} was not reached: {crashed.stderr}"
        virtainer(*args)  # the next up works
        wait_until(lambda: "GUEST-DISK-MARKER=VIRTAINER-TINY-DISK v1" in serial_log(vm_dir), 60, f"boot after {step}")
        assert "GUEST-DISK-BOOTS=1" in serial_log(vm_dir)  # a fresh diff on the very base
        virtainer("destroy", name)
        assert_clean_qcow2(diff)
        assert storage.read_base_record(tiny_spec_of(tiny, name, vm_dir, diff.name)) is not None
        assert sha256(kept) == kept_sha
        # the next up removed what the killed one left beside the diff and in the state directory
        # (a half-made data disk's temporary file stays: a data disk is not under the diff's lock)
        places = (*vm_dir.glob(f".{diff.name}*"), *(vm_dir / "state").iterdir())
        assert [path.name for path in places if path.suffix == ".tmp"] == [], f"after {step}"
