"""The tiny guest through the library (machine.up on the real libvirtd): shared by real-guest tests."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import forget_domain, unique_name
from tests.guests import TINY_CMDLINE, TinyGuest
from tests.waiting import wait_until
from virtainer.hypervisor import Hypervisor
from virtainer.spec import VmSpec, resolve_spec, settings_from_mapping

# typed into the guest's console shell: it overwrites random 64 KiB blocks of its disk (never the
# boot counter in block 0), printing WROTE-BLOCKS after each write
WRITE_LOOP = (
    "while true; do dd if=/dev/urandom of=/dev/vda bs=64k count=4 seek=$((1 + RANDOM % 900)) "
    "conv=notrunc 2>/dev/null; echo WROTE-BLOCKS; done &"
)


def assert_clean_qcow2(path: Path) -> None:
    """`qemu-img check` finds no error, corruption or leaked cluster in the qcow2 itself (its backing
    file is not opened: a container's diff names the base by the container's path)."""
    options = f"driver=qcow2,file.driver=file,file.filename={str(path).replace(',', ',,')},backing="
    done = subprocess.run(["qemu-img", "check", "--output=json", "--image-opts", options],
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"qemu-img check of {path} exited {done.returncode}: {done.stdout}{done.stderr}"
    report = json.loads(done.stdout)
    assert (report.get("check-errors", 0), report.get("corruptions", 0), report.get("leaks", 0)) == (0, 0, 0)


def tiny_spec_of(tiny: TinyGuest, name: str, directory: Path, diff: str = "diff.qcow2", **extra: object) -> VmSpec:
    """Direct kernel boot, no network, waiting only for `running`; `extra` as settings."""
    settings = {
        "name": name, "image": str(tiny.base_image), "kernel": str(tiny.kernel), "initrd": str(tiny.initrd),
        "cmdline": TINY_CMDLINE, "state_dir": str(directory / "state"), "diff": str(directory / diff),
        "memory": "256M", "vcpus": 1, "network": "none", "wait_for": "running", "boot_timeout": 60, **extra,
    }  # fmt: skip
    return resolve_spec(settings_from_mapping(settings, "test"))


@contextlib.contextmanager
def forgotten_afterwards(prefix: str) -> Iterator[str]:
    """A unique domain name; the domain and its snapshots' metadata are removed afterwards."""
    vm = unique_name(prefix)
    try:
        yield vm
    finally:
        forget_domain(vm)
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["virsh", "-q", "undefine", vm, "--snapshots-metadata"], capture_output=True, timeout=30)


def console_answer(hv: Hypervisor, vm: str, command: str, marker: str) -> str:
    """Run `command` in the guest's console shell; return the first line starting with `marker`."""

    def lines() -> list[str]:
        return [line.strip() for line in seen.decode(errors="replace").splitlines() if line.startswith(marker)]

    seen = bytearray()
    with hv.console(vm) as console:
        console.write(f"\r{command}\r".encode())
        wait_until(lambda: seen.extend(console.read(0.5)) or bool(lines()), 30, f"the guest's {marker} line")
    return lines()[0]
