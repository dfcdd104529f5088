"""Running the `virtainer` command on the tiny guest, as users type it: shared by the real-guest tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.guests import TINY_CMDLINE, TinyGuest

VIRTAINER = [sys.executable, "-m", "virtainer.cli"]


def virtainer(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*VIRTAINER, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"virtainer {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
    return done


def tiny_up_args(tiny: TinyGuest, name: str, vm_dir: Path, *extra: str, boot_timeout_s: int = 60) -> list[str]:
    """`virtainer up` of the tiny guest by direct kernel boot, no network, its state in vm_dir/state."""
    return [
        "up", name, "--kernel", str(tiny.kernel), "--initrd", str(tiny.initrd), "--cmdline", TINY_CMDLINE,
        "--memory", "256", "--vcpus", "1", "--state-dir", str(vm_dir / "state"), "--network", "none",
        "--wait-for", "running", "--boot-timeout", str(boot_timeout_s), *extra,
    ]  # fmt: skip


def serial_log(vm_dir: Path) -> str:
    path = vm_dir / "state" / "serial.log"
    return path.read_text(errors="replace") if path.exists() else ""
