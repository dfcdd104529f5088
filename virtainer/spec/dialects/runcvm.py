"""RunCVM: its environment variables and their value forms (display modes, VGA names)."""

from __future__ import annotations

from collections.abc import Mapping

from virtainer.errors import ConfigError
from virtainer.spec.dialects import AliasTranslator
from virtainer.spec.model import VNC_BASE_PORT
from virtainer.spec.parsers import is_ascii_number


def _vnc(name: str, value: str, environ: Mapping[str, str]) -> str:
    """RunCVM's display modes are port 5900 + display."""
    text = value.strip().lower()
    display = environ.get("RUNCVM_QEMU_VNC_DISPLAY", "").strip()
    if name == "RUNCVM_QEMU_VNC_DISPLAY":
        return str(VNC_BASE_PORT + _display(display))
    if text == "vnc":
        return str(VNC_BASE_PORT + _display(display or "0"))
    if text in ("headless", "serial"):  # RunCVM: a VNC display number still starts a VNC server
        return str(VNC_BASE_PORT + _display(display)) if display else "off"
    raise ConfigError(name, value, "headless, serial or vnc")


def _display(text: str) -> int:
    if not is_ascii_number(text, digits=5) or int(text) > 65535 - VNC_BASE_PORT:
        raise ConfigError("RUNCVM_QEMU_VNC_DISPLAY", text, "a VNC display number from 0 (port 5900 + display)")
    return int(text)


def _video(_name: str, value: str, _environ: Mapping[str, str]) -> str:
    return "vga" if value.strip().lower() == "std" else value  # RunCVM's RUNCVM_QEMU_VGA=std


ALIASES: dict[str, tuple[str, ...]] = {
    "disks": ("RUNCVM_DISKS",),
    "video": ("RUNCVM_QEMU_VGA",),
    "vnc": ("RUNCVM_DISPLAY_MODE", "RUNCVM_QEMU_VNC_DISPLAY"),
}
TRANSLATE: dict[str, AliasTranslator] = {
    "RUNCVM_DISPLAY_MODE": _vnc,
    "RUNCVM_QEMU_VNC_DISPLAY": _vnc,
    "RUNCVM_QEMU_VGA": _video,
}
