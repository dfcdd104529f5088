"""Choosing between KVM and TCG.

`/dev/kvm` being present is not enough: on nested or paravirtual hosts KVM may exist yet fail to
run a guest (seen: QEMU aborts at vCPU setup with "failed to set MSR"). So `auto` asks QEMU itself
to create a vCPU with the CPU model virtainer would use, and only then picks KVM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

from virtainer.errors import HypervisorError

AcceleratorKind = Literal["kvm", "tcg"]
KVM_DEVICE = "/dev/kvm"
QEMU_BINARY = "qemu-system-x86_64"
PROBE_TIMEOUT_S = 20


@dataclass(frozen=True)
class AcceleratorChoice:
    kind: AcceleratorKind
    reason: str

    @property
    def domain_type(self) -> str:
        return "kvm" if self.kind == "kvm" else "qemu"


def kvm_device_usable() -> str | None:
    """None when /dev/kvm opens read-write, else why not."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{KVM_DEVICE} does not exist"
    except PermissionError:
        return f"{KVM_DEVICE} is not accessible (permission denied)"
    except OSError as error:
        return f"{KVM_DEVICE} cannot be opened ({error.strerror})"
    os.close(fd)
    return None


def probe_kvm_vcpu() -> str | None:
    """None when QEMU can create a KVM vCPU with `-cpu host`, else QEMU's complaint.

    The guest is never run: QEMU stops at -S, and quits when the QMP stream asks it to.
    """
    if shutil.which(QEMU_BINARY) is None:
        return f"{QEMU_BINARY} is not installed"
    command = [
        QEMU_BINARY, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-nodefaults",
        "-display", "none", "-S", "-qmp", "stdio",
    ]  # fmt: skip
    qmp = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    try:
        done = subprocess.run(
            command, input=qmp, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return "QEMU did not finish a KVM vCPU probe in time"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if "warning" not in line]
    return lines[0].removeprefix(f"{QEMU_BINARY}: ") if lines else f"exit status {done.returncode}"


def choose_accelerator(requested: str, *, libvirt_offers_kvm: bool | None = None) -> AcceleratorChoice:
    """Decide kvm or tcg. `libvirt_offers_kvm` None means libvirt was not asked (render only)."""
    if requested == "tcg":
        return AcceleratorChoice("tcg", "forced by accelerator=tcg")
    problem = kvm_device_usable()
    if problem is None and libvirt_offers_kvm is False:
        problem = "libvirt does not offer the kvm domain type"
    if problem is None:
        problem = probe_kvm_vcpu()
    if requested == "kvm":
        if problem:
            raise HypervisorError(
                f"accelerator=kvm was asked for but KVM is unusable: {problem}",
                hint="pass --device /dev/kvm to docker, or use accelerator=tcg",
            )
        return AcceleratorChoice("kvm", "forced by accelerator=kvm")
    if problem:
        return AcceleratorChoice("tcg", f"KVM unusable: {problem}")
    return AcceleratorChoice("kvm", "KVM is usable")
