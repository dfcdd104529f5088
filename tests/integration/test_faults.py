"""Fault injection on real guests (issue 8, "Tests that must pass"), on the tiny guest under the
real libvirtd and QEMU.

- QEMU SIGKILLed while the guest writes to its disk, 20 runs on one diff: every time the diff
  opens, `qemu-img check` finds it clean, and every boot the guest counted is still on it. (In a
  container, SIGKILL of the container is exactly this for the diff: QEMU dies at once.)
- `virtainer up` SIGKILLed at each step of creating a diff (VIRTAINER_TEST_CRASH_AT): the next
  `up` works, and no disk the user had is changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guests import TinyGuest, tiny_guest
from tests.tiny_cli import VIRTAINER, serial_log, tiny_up_args, virtainer
from tests.tiny_vm import console_answer, forgotten_afterwards, tiny_spec_of
from tests.waiting import wait_until
from virtainer import machine, storage
from virtainer.faults import CRASH_AT_ENV
from virtainer.hypervisor import DomainState, Hypervisor

pytestmark = pytest.mark.guest
KILL_RUNS = 20
# the guest overwrites random 64 KiB blocks of its disk (never the boot counter at block 0)
WRITE_LOOP = (
    "while true; do dd if=/dev/urandom of=/dev/vda bs=64k count=4 seek=$((1 + RANDOM % 900)) "
    "conv=notrunc 2>/dev/null; echo WROTE-BLOCKS; done &"
)


@pytest.fixture(scope="module")
def tiny() -> TinyGuest:
    return tiny_guest()


@pytest.fixture
def name() -> Iterator[str]:
    with forgotten_afterwards("faults") as vm:
        yield vm


def qemu_pid(name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())


def check_clean(diff: Path) -> None:
    done = subprocess.run(["qemu-img", "check", "-f", "qcow2", "--output=json", str(diff)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    report = json.loads(done.stdout or "{}")
    assert done.returncode == 0, f"qemu-img check exited {done.returncode}: {done.stdout}{done.stderr}"
    assert report.get("check-errors", 0) == 0 and report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0


def test_qemu_killed_during_guest_writes_leaves_a_clean_diff(tiny: TinyGuest, vm_dir: Path, name: str) -> None:
    spec = tiny_spec_of(tiny, name, vm_dir)
    with Hypervisor() as hv:
        for run in range(1, KILL_RUNS + 1):
            machine.up(spec, hv, wait=False)
            wait_until(lambda: "GUEST-READY" in serial_log(vm_dir), 60, f"GUEST-READY (run {run})")
            assert f"GUEST-DISK-BOOTS={run}\n" in serial_log(vm_dir).replace("\r", "")  # every boot kept
            console_answer(hv, name, WRITE_LOOP + " echo LOOP-STARTED", "LOOP-STARTED")
            wait_until(lambda: serial_log(vm_dir).count("WROTE-BLOCKS\r") >= 3, 30, "the guest's writes")
            os.kill(qemu_pid(name), signal.SIGKILL)
            wait_until(lambda: hv.state(name) in (DomainState.SHUT_OFF, DomainState.CRASHED), 30, "QEMU gone")
            assert storage.image_info(spec.diff_path)["format"] == "qcow2"  # it opens
            check_clean(spec.diff_path)


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
        check_clean(diff)
        assert storage.read_base_record(tiny_spec_of(tiny, name, vm_dir, diff.name)) is not None
        assert sha256(kept) == kept_sha
