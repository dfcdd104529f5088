"""Guest hardware profiles: the virtual hardware an operating system family boots and runs well on.

A profile only supplies defaults: every choice it makes (machine, firmware, disk bus, NIC model,
video model, clock) is also a setting of its own, and a setting the user gives wins.

* `linux`: virtio everything (the default).
* `windows`: q35, Hyper-V enlightenments (under KVM), RTC in local time; SATA disks and an e1000
  NIC, which Windows drives out of the box, or virtio when the guest has the virtio-win drivers
  (`windows_drivers=virtio`).
* `windows-7`, `windows-2003`, `windows-xp`: machine `pc`, legacy BIOS only, IDE disks, a NIC the
  release has an inbox driver for (e1000 for 7, rtl8139 for XP/2003), VGA or Cirrus video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["linux", "windows"]

# Hyper-V enlightenments, as libvirt 9.0 spells them. KVM only: QEMU's TCG refuses vpindex & co.
HYPERV_FULL = ("relaxed", "vapic", "spinlocks", "vpindex", "synic", "stimer", "reset", "frequencies")
HYPERV_BASIC = ("relaxed", "vapic", "spinlocks")  # what Windows 7 / 2008 R2 already use
HYPERV_SPINLOCK_RETRIES = 8191


@dataclass(frozen=True)
class Profile:
    name: str
    family: Family
    legacy: bool  # legacy BIOS only (no UEFI), no virtio-era assumptions
    machine: str
    disk_bus: str  # without virtio drivers in the guest
    nic_model: str  # without virtio drivers in the guest
    video: str
    clock: Literal["utc", "localtime"]
    hyperv: tuple[str, ...] = ()


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("linux", "linux", False, "pc", "virtio", "virtio", "virtio", "utc"),
        Profile("windows", "windows", False, "q35", "sata", "e1000", "vga", "localtime", HYPERV_FULL),
        Profile("windows-7", "windows", True, "pc", "ide", "e1000", "vga", "localtime", HYPERV_BASIC),
        Profile("windows-2003", "windows", True, "pc", "ide", "rtl8139", "cirrus", "localtime"),
        Profile("windows-xp", "windows", True, "pc", "ide", "rtl8139", "cirrus", "localtime"),
    )
}

# Other names for a profile: Windows releases as SupraVM's VM_OS_SUB_VER spells them.
PROFILE_SYNONYMS: dict[str, str] = {
    **{
        f"windows-{release}": "windows"
        for release in ("8", "8.1", "10", "11", "2012", "2012r2", "2016", "2019", "2022", "2025")
    },
    **{f"windows-{release}": "windows-7" for release in ("vista", "2008", "2008r2")},
}


def profile_names() -> str:
    return ", ".join(PROFILES) + " (or a Windows release: windows-10, windows-11, windows-2019, ...)"


def canonical_profile(text: str) -> str | None:
    name = text.strip().lower()
    if name in PROFILES:
        return name
    return PROFILE_SYNONYMS.get(name)
