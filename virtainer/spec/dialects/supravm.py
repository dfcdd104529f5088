"""SupraVM: its environment variables, their value forms, and its disk layout.

SupraVM keeps a VM's disks at /opt/vm/{SUPRA_APPS}/{VM_STORAGE_ID}/sys.qcow2 + dataN.qcow2 and
configures everything else by environment variables (cores, RAM, MAC, port redirects, guest
LAN, isolation, VNC).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from virtainer.errors import ConfigError
from virtainer.profiles import PROFILES, Profile, canonical_profile
from virtainer.spec.dialects import AliasTranslator
from virtainer.spec.model import DataDisk, Firmware
from virtainer.spec.network import parse_guest_forward, parse_port_rule
from virtainer.spec.parsers import is_ascii_number
from virtainer.validators import NO, YES, Invalid

ROOT = Path("/opt/vm")  # SupraVM: /opt/vm/{SUPRA_APPS}/{VM_STORAGE_ID}/sys.qcow2 + dataN.qcow2
VNC_PORT = 5999  # SupraVM's VM_GUEST_VNC=1: QEMU display :99
SYSTEM_DISK = "sys.qcow2"


def _profile(name: str, value: str, environ: Mapping[str, str]) -> str:
    """SUPRA_APPS=windows|linux; VM_OS_SUB_VER (windows-xp, windows-10, ...) refines windows."""
    apps = environ.get("SUPRA_APPS", "").strip()
    if apps and apps.lower() not in ("windows", "linux"):
        raise ConfigError("SUPRA_APPS", apps, "windows or linux (one VM per container)")
    if name == "VM_OS_SUB_VER" and apps.lower() == "linux":
        raise ConfigError(name, value, "a Windows release only with SUPRA_APPS=windows (unset it for linux)")
    if name == "SUPRA_APPS" and apps.lower() == "windows":
        # SUPRA_APPS names the family; VM_OS_SUB_VER (or VIRTAINER_PROFILE) the release within it
        for refined in (environ.get("VM_OS_SUB_VER", "").strip(), environ.get("VIRTAINER_PROFILE", "").strip()):
            profile = canonical_profile(refined) if refined else None
            if profile is not None and PROFILES[profile].family == "windows":
                return refined
    return value


def _vnc(name: str, value: str, _environ: Mapping[str, str]) -> str:
    """VM_GUEST_VNC=1 is port 5999."""
    text = value.strip().lower()
    if text in YES:
        return str(VNC_PORT)
    if text in NO:
        return "off"
    if not is_ascii_number(text):
        raise ConfigError(name, value, f"1 (VNC on port {VNC_PORT}), 0, or a TCP port from 5900 to 65535")
    return text


def _items(name: str, value: str, fields: int, accepted: str) -> list[list[str]]:
    """SupraVM's lists: ("A:B:C" "D:E:F"), parentheses and quotes optional, blank-separated."""
    text = value.strip()
    if text.startswith("("):
        if not text.endswith(")"):
            raise ConfigError(name, value, accepted)
        text = text[1:-1]
    items: list[list[str]] = []
    for item in text.split():
        if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'":
            item = item[1:-1]
        parts = item.split(":")
        if len(parts) != fields or not all(parts):
            raise ConfigError(name, value, accepted)
        items.append(parts)
    if not items:
        raise ConfigError(name, value, accepted)
    return items


PORTS_FORM = '("TARGET-IP:TARGET-PORT:INCOMING-PORT" ...), TARGET-IP 0.0.0.0 for the guest'
FORWARDS_FORM = '("TARGET-IP:TARGET-PORT:REAL-IP:REAL-PORT" ...)'


def _ports(name: str, value: str, _environ: Mapping[str, str]) -> str:
    """VM_TCP_PORTS='("0.0.0.0:3389:3389")' (target first, incoming last) -> tcp:3389:3389."""
    rules = []
    for target, target_port, incoming in _items(name, value, 3, PORTS_FORM):
        guest = target_port if target == "0.0.0.0" else f"{target}:{target_port}"
        rule = f"tcp:{incoming}:{guest}"
        try:
            parse_port_rule(rule)
        except Invalid:
            raise ConfigError(name, value, PORTS_FORM + ", ports from 1 to 65535") from None
        rules.append(rule)
    return " ".join(rules)


def _forwards(name: str, value: str, _environ: Mapping[str, str]) -> str:
    forwards = []
    for parts in _items(name, value, 4, FORWARDS_FORM):
        forward = "tcp:" + ":".join(parts)
        try:
            parse_guest_forward(forward)
        except Invalid as invalid:
            raise ConfigError(name, value, f"{FORWARDS_FORM}; {invalid}") from None
        forwards.append(forward)
    return " ".join(forwards)


ALIASES: dict[str, tuple[str, ...]] = {
    "vcpus": ("VM_CPU_CORES",),
    "memory": ("VM_RAM",),
    "mac": ("VM_MAC",),
    "ports": ("VM_TCP_PORTS",),
    "guest_forwards": ("VM_GUEST_TCP_FWDS",),
    "guest_restrict": ("VM_GUEST_RESTRICT",),
    "guest_lan": ("VM_GUEST_LAN",),
    "profile": ("VM_OS_SUB_VER", "SUPRA_APPS"),
    "vnc": ("VM_GUEST_VNC",),
    "storage_id": ("VM_STORAGE_ID",),
}
TRANSLATE: dict[str, AliasTranslator] = {
    "VM_TCP_PORTS": _ports,
    "VM_GUEST_TCP_FWDS": _forwards,
    "VM_OS_SUB_VER": _profile,
    "SUPRA_APPS": _profile,
    "VM_GUEST_VNC": _vnc,
}


def parse_storage_id(value: object) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", text):
        raise Invalid("a directory name: letters, digits, '.', '_' or '-', starting with a letter or digit")
    return text


def storage_dir(root: Path, profile: str, storage_id: str) -> Path:
    """ROOT/{windows|linux}/{VM_STORAGE_ID}/, named after the profile's family."""
    return root / PROFILES[profile].family / storage_id


def data_disks(storage_dir: Path) -> tuple[DataDisk, ...]:
    """data0.qcow2, data1.qcow2, ... in order, stopping at the first gap (as SupraVM does)."""
    disks: list[DataDisk] = []
    while (path := storage_dir / f"data{len(disks)}.qcow2").is_file():
        disks.append(DataDisk(path=path))
    return tuple(disks)


def hardware_defaults(profile: Profile) -> tuple[str, Firmware, str]:
    """Machine, firmware and Windows drivers of SupraVM's hardware contract: its system disks
    carry the virtio drivers and boot with UEFI on q35 (legacy BIOS for windows-7/-2003/-xp,
    machine pc for -2003/-xp)."""
    old_chipset = profile.name in ("windows-2003", "windows-xp")
    return ("pc" if old_chipset else "q35"), ("bios" if profile.legacy else "uefi"), "virtio"
