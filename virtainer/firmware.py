"""What the host offers for guest firmware and devices: OVMF (UEFI) and swtpm (emulated TPM).

OVMF is found through QEMU's firmware descriptors (`/usr/share/qemu/firmware/*.json`, the files
libvirt itself reads), taking the first, by file name, that is plain UEFI on flash for x86_64:
no Secure Boot, no enrolled keys, no SMM requirement. Well-known paths are the fallback.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FIRMWARE_DESCRIPTORS = (Path("/etc/qemu/firmware"), Path("/usr/share/qemu/firmware"))
_UNWANTED_FEATURES = {"secure-boot", "enrolled-keys", "requires-smm", "amd-sev-es", "intel-tdx"}
_KNOWN_OVMF = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),  # Debian, Ubuntu
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),  # Fedora
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),  # Arch
)


@dataclass(frozen=True)
class UefiFirmware:
    """OVMF's read-only code and the template each VM's NVRAM (variable store) is copied from."""

    code: Path
    vars_template: Path


def find_ovmf(descriptor_dirs: Iterable[Path] = FIRMWARE_DESCRIPTORS) -> UefiFirmware | None:
    descriptors: dict[str, Path] = {}
    for directory in descriptor_dirs:  # like QEMU: a name in /etc overrides the same name in /usr
        if directory.is_dir():
            for path in directory.glob("*.json"):
                descriptors.setdefault(path.name, path)
    for name in sorted(descriptors):
        found = _plain_uefi(descriptors[name])
        if found is not None:
            return found
    for code, template in _KNOWN_OVMF:
        if Path(code).is_file() and Path(template).is_file():
            return UefiFirmware(Path(code), Path(template))
    return None


def _plain_uefi(descriptor: Path) -> UefiFirmware | None:
    try:
        data = json.loads(descriptor.read_text())
        mapping = data["mapping"]
        if "uefi" not in data.get("interface-types", []) or mapping.get("device") != "flash":
            return None
        if _UNWANTED_FEATURES & set(data.get("features", [])):
            return None
        if not any(target.get("architecture") == "x86_64" for target in data.get("targets", [])):
            return None
        if mapping["executable"].get("format", "raw") != "raw":
            return None
        code = Path(mapping["executable"]["filename"])
        template = Path(mapping["nvram-template"]["filename"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return UefiFirmware(code, template) if code.is_file() and template.is_file() else None


def swtpm_installed() -> bool:
    """libvirt starts `swtpm` for an emulated TPM and runs `swtpm_setup` to create its state."""
    return shutil.which("swtpm") is not None and shutil.which("swtpm_setup") is not None
