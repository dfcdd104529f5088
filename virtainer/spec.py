"""The one typed VM spec, and the settings it is read from.

A spec is assembled from raw settings (CLI flags, a JSON/YAML file, environment variables, API
JSON), each remembered with the name the user wrote (`RAM`, `--memory`, `memory in vm.yaml`), and
validated once by `resolve_spec`. Every invalid value raises `ConfigError` naming that setting,
the value and what is accepted; nothing touches the disk before a spec exists.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from virtainer.collisions import check_distinct_files
from virtainer.errors import ConfigError
from virtainer.firmware import UefiFirmware, find_ovmf, swtpm_installed
from virtainer.profiles import PROFILES, canonical_profile, profile_names
from virtainer.units import SIZE_FORMS, parse_size_mib

Accelerator = Literal["auto", "kvm", "tcg"]
PasswordPolicy = Literal["auto", "random", "fixed", "none"]
NetworkMode = Literal["network", "bridge", "user", "none"]
Stage = Literal["running", "ip", "agent", "cloud-init", "ssh", "exec"]
Firmware = Literal["bios", "uefi"]
ClockOffset = Literal["utc", "localtime"]

STAGES: tuple[Stage, ...] = ("running", "ip", "agent", "cloud-init", "ssh")
# exec: the user's own probe (wait_for=...,exec:CMD), ready when CMD exits 0 in the guest, after the rest
ALL_STAGES: tuple[Stage, ...] = (*STAGES, "exec")
EXEC_PROBE = "exec:"
DEFAULT_STATE_ROOT = Path("/var/lib/virtainer")
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat")
MACHINES = ("pc", "q35")
DISK_BUSES = ("virtio", "scsi", "sata", "ide")
DISK_CACHES = ("default", "none", "writeback", "writethrough", "unsafe", "directsync")
VIDEO_MODELS = ("virtio", "vga", "cirrus", "bochs", "none")
SUPRAVM_ROOT = Path("/opt/vm")  # SupraVM: /opt/vm/{SUPRA_APPS}/{VM_STORAGE_ID}/sys.qcow2 + dataN.qcow2
SUPRAVM_VNC_PORT = 5999  # SupraVM's VM_GUEST_VNC=1: QEMU display :99
VNC_BASE_PORT = 5900
USER_FORWARDS_MAX = 1024  # user-mode networking forwards port by port: one hostfwd each
USER_DEFAULT_PORTS = "tcp:22"  # what user-mode networking forwards in the container without rules
IDE_DISKS_MAX = 3  # two IDE channels of two units each; hdc holds the seed cdrom


class Invalid(ValueError):
    """Raised by a field parser; its text says what is accepted."""


@dataclass(frozen=True)
class ImageSource:
    path: Path | None = None
    url: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        return str(self.path) if self.path else str(self.url)


@dataclass(frozen=True)
class DataDisk:
    """An extra disk: an existing image, or one created on first start with a size."""

    path: Path
    size_mib: int | None = None
    filesystem: str | None = None
    mount: str | None = None


Protocol = Literal["tcp", "udp"]
PortRange = tuple[int, int]  # first, last (equal for one port)


@dataclass(frozen=True)
class PortRule:
    """Connections to the container's INCOMING port(s) go to the guest's port(s): `tcp:8080:80`.

    target: an address inside the guest LAN other than the guest's own (None: the guest)."""

    protocol: Protocol
    incoming: PortRange
    guest: PortRange
    target: ipaddress.IPv4Address | None = None

    def pairs(self) -> list[tuple[int, int]]:
        """(incoming, guest) port by port."""
        offset = self.guest[0] - self.incoming[0]
        return [(port, port + offset) for port in range(self.incoming[0], self.incoming[1] + 1)]

    def describe(self) -> str:
        def text(ports: PortRange) -> str:
            return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"

        target = f"{self.target}:" if self.target else ""
        return f"{self.protocol}:{text(self.incoming)}->{target}{text(self.guest)}"


@dataclass(frozen=True)
class GuestForward:
    """A guest connection to TARGET:TARGET-PORT is carried to REAL:REAL-PORT."""

    protocol: Protocol
    target: ipaddress.IPv4Address
    target_port: int
    real: ipaddress.IPv4Address
    real_port: int

    def describe(self) -> str:
        return f"{self.protocol}:{self.target}:{self.target_port}->{self.real}:{self.real_port}"


@dataclass(frozen=True)
class NetworkSpec:
    mode: NetworkMode = "network"
    source: str = "default"  # libvirt network or host bridge name
    # Network control (inside the virtainer container, or with user-mode networking):
    # explicit redirects; None: every port but the container's own (NAT in the container), or
    # only SSH (user-mode networking in the container: QEMU can only forward port by port)
    ports: tuple[PortRule, ...] | None = None
    forwards: tuple[GuestForward, ...] = ()
    restrict: bool = False  # the guest reaches nothing but its explicit forwards
    lan: ipaddress.IPv4Network | None = None  # None: chosen by the container / QEMU's 10.0.2.0/24

    @property
    def gateway(self) -> ipaddress.IPv4Address | None:
        return self.lan.network_address + 1 if self.lan else None

    @property
    def guest_ip(self) -> ipaddress.IPv4Address | None:
        """The guest's fixed address in its LAN (handed out by DHCP to its MAC)."""
        return self.lan.network_address + 2 if self.lan else None

    def incoming_port(self, guest_port: int, protocol: Protocol = "tcp") -> int | None:
        """The incoming port an explicit rule forwards to this port of the guest, if any."""
        for rule in self.ports or ():
            if rule.protocol == protocol and rule.target is None:
                for incoming, guest in rule.pairs():
                    if guest == guest_port:
                        return incoming
        return None

    @property
    def controlled(self) -> bool:
        """True when a network-control setting was given (ports, forwards, restrict, lan)."""
        return self.ports is not None or bool(self.forwards or self.restrict or self.lan)


@dataclass(frozen=True)
class DirectBoot:
    """Boot a kernel directly (no firmware/bootloader): used by the tiny test guest."""

    kernel: Path
    initrd: Path | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class VncSpec:
    """A VNC server on the guest's display. port None: libvirt picks the first free from 5900."""

    port: int | None
    listen: str
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VmSpec:
    name: str
    vcpus: int
    memory_mib: int
    image: ImageSource
    diff_path: Path
    state_dir: Path
    os_variant: str = "generic"
    default_user: str | None = None
    hostname: str = "vm"
    disk_size_mib: int | None = None
    accelerator: Accelerator = "auto"
    ssh_authorized_keys: tuple[str, ...] = ()
    user_data: Path | None = None
    meta_data: Path | None = None
    network_config: Path | None = None
    seed_iso: Path | None = None
    seed_path: Path | None = None
    password: str | None = field(default=None, repr=False)
    password_policy: PasswordPolicy = "auto"
    mac_address: str | None = None
    data_disks: tuple[DataDisk, ...] = ()
    network: NetworkSpec = NetworkSpec()
    direct_boot: DirectBoot | None = None
    machine: str = "pc"
    wait_for: tuple[Stage, ...] = STAGES
    ready_command: str | None = None  # the exec stage's command (sh -c in the guest)
    boot_timeout_s: float = 600.0
    stop_timeout_s: float = 60.0
    # guest hardware: the profile's defaults, each overridable by its own setting
    profile: str = "linux"
    firmware: Firmware = "bios"
    uefi: UefiFirmware | None = None  # OVMF's code and NVRAM template when firmware is uefi
    tpm: bool = False  # an emulated TPM 2.0 (swtpm)
    clock_offset: ClockOffset = "utc"
    disk_bus: str = "virtio"
    disk_cache: str | None = None  # None: QEMU's default (writeback, guest flushes honoured)
    nic_model: str = "virtio"
    # the guest has virtio drivers (every linux profile; windows with windows_drivers=virtio):
    # its cloud-init seed is then a read-only virtio disk, found by its cidata label by any cloud
    # kernel, where a cdrom on q35's AHCI is invisible to kernels without AHCI (Debian's cloud)
    virtio_drivers: bool = True
    video: str = "virtio"  # the display adapter, when there is one (VNC, Windows); "none": never
    vnc: VncSpec | None = None
    storage_dir: Path | None = None  # SupraVM's layout: the directory of sys.qcow2 and dataN.qcow2

    @property
    def seed_bus(self) -> str:
        """Where the seed is attached: a virtio disk, or (no virtio drivers) a cdrom on IDE/SATA."""
        if self.virtio_drivers:
            return "virtio"
        return "sata" if self.machine == "q35" else "ide"

    @property
    def generated_seed_path(self) -> Path:
        return self.seed_path or self.state_dir / "seed.iso"

    @property
    def serial_log_path(self) -> Path:
        return self.state_dir / "serial.log"

    @property
    def domain_xml_path(self) -> Path:
        """The domain as last defined (for the user to read; libvirt keeps its own copy)."""
        return self.state_dir / "domain.xml"

    @property
    def readiness_path(self) -> Path:
        return self.state_dir / READINESS_FILE

    @property
    def base_record_path(self) -> Path:
        """The base image's identity, recorded beside the diff (it travels with the diff)."""
        return beside_diff(self.diff_path, BASE_RECORD_SUFFIX)

    @property
    def password_path(self) -> Path:
        """A generated password lives beside the diff: same disk, same password, same seed."""
        return beside_diff(self.diff_path, ".password")

    @property
    def nvram_path(self) -> Path:
        """UEFI variables (boot entries, ...) live beside the diff and travel with it."""
        return beside_diff(self.diff_path, ".nvram.fd")

    @property
    def nic_record_path(self) -> Path:
        """The NIC's MAC address, recorded beside the diff: a copied diff keeps its NIC."""
        return beside_diff(self.diff_path, ".nic.json")

    @property
    def format_record_path(self) -> Path:
        """The data disks' formats, recorded when first attached: never probed again."""
        return beside_diff(self.diff_path, ".formats.json")


def beside_diff(diff: Path, suffix: str) -> Path:
    """A file that belongs to a diff sits next to it, named after it, and travels with it."""
    return diff.with_name(diff.name + suffix)


BASE_RECORD_SUFFIX = ".base.json"
READINESS_FILE = "readiness.json"


@dataclass(frozen=True)
class RawValue:
    value: Any
    origin: str  # the name the user wrote: "RAM", "--memory", "memory (vm.yaml)"
    # the same setting under its other names in the same layer (RAM and VM_RAM, disk_size and
    # disk-size in one file): each must mean what `value` means, or the setting is refused
    others: tuple[RawValue, ...] = ()

    def with_other(self, other: RawValue) -> RawValue:
        return replace(self, others=(*self.others, other))


RawSettings = dict[str, RawValue]


@dataclass(frozen=True)
class HostFacts:
    """What defaults are sized from; passed in so resolution stays pure and testable."""

    cpus: int
    memory_mib: int
    uefi: UefiFirmware | None = None  # OVMF, when installed
    swtpm: bool = False  # swtpm, when installed
    in_container: bool = False  # decides where VNC listens by default

    @classmethod
    def probe(cls) -> HostFacts:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return cls(
            cpus=os.cpu_count() or 1,
            memory_mib=pages // (1024 * 1024),
            uefi=find_ovmf(),
            swtpm=swtpm_installed(),
            in_container=running_in_container(),
        )


def running_in_container() -> bool:
    return any(Path(marker).exists() for marker in ("/.dockerenv", "/run/.containerenv"))


# ---------------------------------------------------------------------------------------------
# Settings: one table drives the file keys, environment variables and CLI flags.


# An alias whose values mean something else than the canonical setting's (VM_GUEST_VNC=1 is port
# 5999) is translated: (alias name, value, whole environment) -> the canonical value's text.
AliasTranslator = Callable[[str, str, Mapping[str, str]], str]
_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    key: str
    help: str
    env_aliases: tuple[str, ...] = ()  # names users of earlier systems already use
    multi: bool = False  # a list: repeated flag, list in a file, ';'-separated in env
    secret: bool = False
    translate: AliasTranslator | None = None  # for env_aliases whose values differ

    @property
    def env(self) -> str:
        return "VIRTAINER_" + self.key.upper()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env_names(self) -> tuple[str, ...]:
        return (self.env, *self.env_aliases)


def _profile_from_supravm(name: str, value: str, environ: Mapping[str, str]) -> str:
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


def _vnc_from_alias(name: str, value: str, environ: Mapping[str, str]) -> str:
    """SupraVM's VM_GUEST_VNC=1 is port 5999; RunCVM's display modes are port 5900 + display."""
    text = value.strip().lower()
    if name == "VM_GUEST_VNC":
        if text in _YES:
            return str(SUPRAVM_VNC_PORT)
        if text in _NO:
            return "off"
        if not is_ascii_number(text):
            raise ConfigError(name, value, f"1 (VNC on port {SUPRAVM_VNC_PORT}), 0, or a TCP port from 5900 to 65535")
        return text
    display = environ.get("RUNCVM_QEMU_VNC_DISPLAY", "").strip()
    if name == "RUNCVM_QEMU_VNC_DISPLAY":
        return str(VNC_BASE_PORT + _runcvm_display(display))
    if text == "vnc":
        return str(VNC_BASE_PORT + _runcvm_display(display or "0"))
    if text in ("headless", "serial"):  # RunCVM: a VNC display number still starts a VNC server
        return str(VNC_BASE_PORT + _runcvm_display(display)) if display else "off"
    raise ConfigError(name, value, "headless, serial or vnc")


def _runcvm_display(text: str) -> int:
    if not is_ascii_number(text, digits=5) or int(text) > 65535 - VNC_BASE_PORT:
        raise ConfigError("RUNCVM_QEMU_VNC_DISPLAY", text, "a VNC display number from 0 (port 5900 + display)")
    return int(text)


def _supravm_items(name: str, value: str, fields: int, accepted: str) -> list[list[str]]:
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


SUPRAVM_PORTS_FORM = '("TARGET-IP:TARGET-PORT:INCOMING-PORT" ...), TARGET-IP 0.0.0.0 for the guest'
SUPRAVM_FORWARDS_FORM = '("TARGET-IP:TARGET-PORT:REAL-IP:REAL-PORT" ...)'


def _ports_from_supravm(name: str, value: str, _environ: Mapping[str, str]) -> str:
    """VM_TCP_PORTS='("0.0.0.0:3389:3389")' (target first, incoming last) -> tcp:3389:3389."""
    rules = []
    for target, target_port, incoming in _supravm_items(name, value, 3, SUPRAVM_PORTS_FORM):
        guest = target_port if target == "0.0.0.0" else f"{target}:{target_port}"
        rule = f"tcp:{incoming}:{guest}"
        try:
            parse_port_rule(rule)
        except Invalid:
            raise ConfigError(name, value, SUPRAVM_PORTS_FORM + ", ports from 1 to 65535") from None
        rules.append(rule)
    return " ".join(rules)


def _forwards_from_supravm(name: str, value: str, _environ: Mapping[str, str]) -> str:
    forwards = []
    for parts in _supravm_items(name, value, 4, SUPRAVM_FORWARDS_FORM):
        forward = "tcp:" + ":".join(parts)
        try:
            parse_guest_forward(forward)
        except Invalid as invalid:
            raise ConfigError(name, value, f"{SUPRAVM_FORWARDS_FORM}; {invalid}") from None
        forwards.append(forward)
    return " ".join(forwards)


def _video_from_runcvm(_name: str, value: str, _environ: Mapping[str, str]) -> str:
    return "vga" if value.strip().lower() == "std" else value  # RunCVM's RUNCVM_QEMU_VGA=std


SETTINGS: tuple[Setting, ...] = (
    Setting("name", "domain name (default vm)", ("VM_NAME",)),
    Setting("vcpus", "virtual CPUs (default: from the host, at most 4)", ("CPU", "VM_CPU_CORES")),
    Setting("memory", "memory, e.g. 1G or 1024 (MiB)", ("RAM", "VM_RAM")),
    Setting("disk_size", "grow the disk to this size, e.g. 20G (bare number = GiB)", ("DISK_SIZE",)),
    Setting("image", "base image: local path", ("IMAGE",)),
    Setting("image_url", "base image: http(s) URL to download", ("IMAGE_URL",)),
    Setting("image_sha256", "expected sha256 of the base image", ("IMAGE_SHA256",)),
    Setting("os_variant", "guest OS, e.g. debian12, fedora40, ubuntu24.04, generic", ("OS_VARIANT",)),
    Setting("user", "the image's default login user (default: from os_variant)"),
    Setting("hostname", "guest hostname (default: the name)"),
    Setting("accelerator", "auto, kvm or tcg", ("VIRTAINER_ACCEL",)),
    Setting("ssh_keys", "SSH public key, or a file holding keys", multi=True),
    Setting("user_data", "cloud-init user-data file"),
    Setting("meta_data", "cloud-init meta-data file"),
    Setting("network_config", "cloud-init network-config file"),
    Setting("seed_iso", "prebuilt cloud-init seed ISO, used as is"),
    Setting("seed_path", "where the generated seed ISO is written", ("CLOUD_INIT_DISK",)),
    Setting("password", "fixed password for the default user (asks for one explicitly)", secret=True),
    Setting("password_policy", "auto, random, fixed or none"),
    Setting("mac", "MAC address of the NIC", ("VM_MAC",)),
    Setting("disks", "extra disk: PATH[,SIZE] or PATH,MOUNT,FS,SIZE", ("RUNCVM_DISKS",), multi=True),
    Setting("network", "default, network:NAME, bridge:NAME, user or none"),
    Setting("ports", "ports that reach the guest: [tcp:|udp:]PORT[-LAST][:GUEST-PORT] ... or none "
            "(default: every port but the container's own; with user-mode networking tcp:22)",
            ("VM_TCP_PORTS",), translate=_ports_from_supravm),
    Setting("guest_forwards", "guest connections carried elsewhere: [tcp:|udp:]TARGET-IP:PORT:REAL-IP:PORT ...",
            ("VM_GUEST_TCP_FWDS",), translate=_forwards_from_supravm),
    Setting("guest_restrict", "1: the guest reaches nothing but its guest_forwards; inbound ports still work "
            "(with network=user only from this host's loopback)", ("VM_GUEST_RESTRICT",)),
    Setting("guest_lan", "the guest's LAN, e.g. 192.168.199.0/24 (default: one no route of the container uses)",
            ("VM_GUEST_LAN",)),
    Setting("diff", "path of the qcow2 diff (the VM's persistent disk)"),
    Setting("image_dir", "directory for the diff, as local_image.qcow2", ("IMAGE_DIR",)),
    Setting("state_dir", "directory for the seed, serial log and domain XML"),
    Setting("kernel", "boot this kernel directly"),
    Setting("initrd", "initrd for --kernel"),
    Setting("cmdline", "kernel command line for --kernel"),
    Setting("machine", "machine type: pc or q35 (default: from the profile)"),
    Setting(
        "profile", "guest hardware: linux (default), windows, windows-7, windows-2003, windows-xp",
        ("VM_OS_SUB_VER", "SUPRA_APPS"), translate=_profile_from_supravm,
    ),  # fmt: skip
    Setting("windows_drivers", "virtio (the guest has virtio-win drivers) or none: SATA disks and e1000"),
    Setting("firmware", "bios or uefi (OVMF; its NVRAM is kept beside the diff)"),
    Setting("tpm", "none or emulated (swtpm, TPM 2.0)"),
    Setting("clock", "the guest's RTC: utc or localtime (default: localtime for Windows)"),
    Setting("disk_bus", "virtio, scsi, sata or ide (default: from the profile)"),
    Setting("disk_cache", "default (QEMU's writeback), none, writeback, writethrough, unsafe or directsync"),
    Setting("video", "display adapter: virtio, vga, cirrus, bochs or none (default: from the profile)",
            ("RUNCVM_QEMU_VGA",), translate=_video_from_runcvm),
    Setting(
        "vnc", "VNC display: off (default), on (port 5900), auto or a port",
        ("VM_GUEST_VNC", "RUNCVM_DISPLAY_MODE", "RUNCVM_QEMU_VNC_DISPLAY"), translate=_vnc_from_alias,
    ),  # fmt: skip
    Setting("vnc_listen", "address VNC listens on (default 127.0.0.1; 0.0.0.0 in a container)"),
    Setting("vnc_password", "VNC password, 1 to 8 characters", secret=True),
    Setting("storage_id", "SupraVM layout: use STORAGE_ROOT/{windows|linux}/ID/sys.qcow2 and dataN.qcow2",
            ("VM_STORAGE_ID",)),
    Setting("storage_root", f"root of the SupraVM layout (default {SUPRAVM_ROOT})"),
    Setting(
        "wait_for",
        "readiness stages to wait for: auto or running,ip,agent,cloud-init,ssh; a last exec:CMD waits "
        "until CMD exits 0 in the guest (through its agent)",
    ),
    Setting("boot_timeout", "seconds to wait for readiness"),
    Setting("stop_timeout", "seconds a graceful stop may take before the VM is destroyed"),
)
SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}


def settings_from_env(environ: Mapping[str, str]) -> RawSettings:
    """Collect settings from environment variables. A setting set under several of its names
    (VIRTAINER_MEMORY, RAM, VM_RAM) is read under the first; the others must mean the same."""
    raw: RawSettings = {}
    for setting in SETTINGS:
        for name in setting.env_names:
            value = environ.get(name)
            if value is not None and value != "":
                if name != setting.env and setting.translate is not None:
                    value = setting.translate(name, value, environ)
                item = RawValue(_split_multi(setting, value), name)
                raw[setting.key] = raw[setting.key].with_other(item) if setting.key in raw else item
    return raw


def _split_multi(setting: Setting, value: str) -> object:
    if not setting.multi:
        return value
    parts = re.split(r"[;\n]", value)
    return [part.strip() for part in parts if part.strip()]


def settings_from_mapping(data: object, origin: str) -> RawSettings:
    """Settings from a parsed file or API JSON; keys are the canonical keys (dashes allowed)."""
    if not isinstance(data, Mapping):
        raise ConfigError(origin, type(data).__name__, "a mapping of settings (key: value)")
    raw: RawSettings = {}
    for key, value in data.items():
        canonical = str(key).replace("-", "_")
        if canonical not in SETTINGS_BY_KEY:
            accepted = "one of: " + ", ".join(s.key for s in SETTINGS)
            raise ConfigError(f"{key} ({origin})", value, "unknown setting; " + accepted)
        setting = SETTINGS_BY_KEY[canonical]
        if setting.multi and not isinstance(value, list):
            value = [value]
        item = RawValue(value, f"{key} ({origin})")
        raw[canonical] = raw[canonical].with_other(item) if canonical in raw else item  # disk_size and disk-size
    return raw


CONFIG_FILE_MAX = 4 << 20


def settings_from_file(path: Path) -> RawSettings:
    """Read a JSON or YAML spec file (JSON is YAML)."""
    try:
        with path.open("rb") as stream:  # read with a cap: `-f /dev/zero` must not read forever
            content = stream.read(CONFIG_FILE_MAX + 1)
        if len(content) > CONFIG_FILE_MAX:
            raise ConfigError("config file", str(path), f"a spec file of at most {CONFIG_FILE_MAX >> 20} MiB")
        data = yaml.safe_load(content.decode())
    except OSError as error:
        raise ConfigError("config file", str(path), f"a readable file ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError("config file", str(path), "a UTF-8 text file (JSON or YAML)") from None
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError("config file", str(path), f"valid JSON or YAML ({first_line})") from None
    except RecursionError:
        raise ConfigError("config file", str(path), "JSON or YAML nested less deeply") from None
    return settings_from_mapping(data if data is not None else {}, path.name)


def merge_settings(*layers: RawSettings) -> RawSettings:
    """Later layers win: file < environment < flags."""
    merged: RawSettings = {}
    for layer in layers:
        merged.update(layer)
    return merged


# ---------------------------------------------------------------------------------------------
# Field parsers: each takes what the user wrote and returns a typed value or raises Invalid.

# Patterns are used with fullmatch only: `$` also matches before a trailing newline ("vm\n")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_KEY_TYPES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")
_VARIANT = re.compile(
    r"(generic|linux|debian|ubuntu|fedora|centos|centos-stream|rhel|almalinux|rocky|"
    r"opensuse|alpine|archlinux)([0-9]{1,4}(\.[0-9]{1,4}){0,3})?"
)
_VARIANT_USERS = {
    "debian": "debian",
    "ubuntu": "ubuntu",
    "fedora": "fedora",
    "centos-stream": "cloud-user",
    "rhel": "cloud-user",
    "almalinux": "almalinux",
    "rocky": "rocky",
    "opensuse": "opensuse",
    "alpine": "alpine",
    "archlinux": "arch",
}
VARIANT_FORMS = (
    "generic, or debian, ubuntu, fedora, centos, centos-stream, rhel, almalinux, rocky, "
    "opensuse, alpine, archlinux with an optional version (debian12, ubuntu24.04, rhel7)"
)


def is_ascii_number(text: str, digits: int = 9) -> bool:
    """Only 0-9, at most `digits` of them: str.isdigit and int() also take '²' and '١٢'."""
    return 0 < len(text) <= digits and text.isascii() and text.isdigit()


def _check_text(text: str) -> None:
    """What a file name, a command line or a key may not hold: NUL, control characters (newlines,
    escapes: they forge log lines and break the files we write) and unencodable code points."""
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise Invalid("text without unencodable characters (lone surrogates)") from None
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in text):
        raise Invalid("text without control characters (newlines, tabs, escapes, NUL)")


def parse_name(value: object) -> str:
    text = str(value)
    if not _NAME.fullmatch(text):
        raise Invalid("1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return text


def parse_hostname(value: object) -> str:
    text = str(value)
    if not _HOSTNAME.fullmatch(text):
        raise Invalid("an RFC 1123 host label: 1-63 letters, digits or '-', not starting with '-'")
    return text


def parse_int(value: object, low: int, high: int) -> int:
    accepted = f"a whole number from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid(accepted)
    text = str(value).strip() if isinstance(value, str) else str(value)
    if not is_ascii_number(text, digits=len(str(high))):
        raise Invalid(accepted)
    number = int(text)
    if not low <= number <= high:
        raise Invalid(accepted)
    return number


MAX_SECONDS = 86400


def parse_seconds(value: object) -> float:
    """A timeout: more than 0, at most a day; never nan or inf (a wait would never end, or not start)."""
    accepted = f"a positive number of seconds, at most {MAX_SECONDS} (e.g. 60 or 2.5)"
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", value.strip()):
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(accepted)
    if not 0 < value <= MAX_SECONDS or (isinstance(value, float) and not math.isfinite(value)):
        raise Invalid(accepted)  # nan compares false: refused too; an int of any size compares exactly
    return float(value)


def parse_size(value: object, *, default_unit: str, low_mib: int, high_mib: int) -> int:
    try:
        mib = parse_size_mib(value if isinstance(value, int) else str(value), default_unit=default_unit)
    except ValueError:
        bare = "MiB" if default_unit == "M" else "GiB"
        raise Invalid(f"{SIZE_FORMS}; a bare number means {bare}") from None
    if not low_mib <= mib <= high_mib:
        raise Invalid(f"a size from {low_mib}M to {high_mib // 1024}G")
    return mib


def timeout_argument(text: str) -> float:
    """An argparse type for timeouts (`down --timeout`): the rules of boot_timeout/stop_timeout."""
    try:
        return parse_seconds(text)
    except Invalid as invalid:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: {invalid}") from None


def parse_choice(value: object, choices: Iterable[str]) -> str:
    options = tuple(choices)
    text = str(value).strip().lower()
    if text not in options:
        raise Invalid("one of " + ", ".join(options))
    return text


def _expand_user(text: str) -> Path:
    """~ and ~user/ as the shell expands them; a ~name/ that names no user is refused, never
    taken as a directory called '~name' in the current one."""
    _check_text(text)
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # Python 3.11 says "Could not determine home directory" for ~nosuchuser
        user = text[1:].split("/", 1)[0]
        raise Invalid(f"a file system path ('~{user}': no such user)") from None
    encoded = os.fsencode(path)
    if len(encoded) >= PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise Invalid(f"a file system path of less than {PATH_MAX} bytes, names of at most {NAME_MAX}")
    return path


PATH_MAX, NAME_MAX = 4096, 255  # Linux's limits: a longer path fails every call with ENAMETOOLONG


def parse_existing_file(value: object) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise Invalid("an existing file (a path)")
    path = _expand_user(str(value))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise Invalid("an existing file (not found)") from None
    except OSError as error:
        raise Invalid(f"an existing file ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        raise Invalid("an existing regular file (this is not a file)")
    if not os.access(path, os.R_OK):
        raise Invalid("a readable file (permission denied)")
    return path.absolute()


def parse_path(value: object) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise Invalid("a file system path")
    return _expand_user(str(value)).absolute()


URL_FORMS = "an http:// or https:// URL with a host (http://HOST[:PORT]/PATH), or file:///PATH"


def parse_url(value: object) -> str:
    """http(s) URLs are downloaded; a file:// URL names a local file (see _resolve_image)."""
    from urllib.parse import urlsplit

    text = str(value).strip()
    if text.lower().startswith("file://"):
        return text
    if not text.isascii() or not text.isprintable() or " " in text:
        raise Invalid(URL_FORMS)
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0  # .port raises ValueError outside 0-65535
    except ValueError:
        raise Invalid(URL_FORMS) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
        raise Invalid(URL_FORMS)
    return text


def _file_url_path(url: str) -> str:
    """file:///PATH or file://localhost/PATH -> /PATH (percent-escapes decoded)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query or parts.fragment:
        raise Invalid(URL_FORMS + " (a file URL names a file of this machine: file:///PATH)")
    return unquote(parts.path)


def parse_sha256(value: object) -> str:
    text = str(value).strip().lower().removeprefix("sha256:")
    if not _SHA256.fullmatch(text):
        raise Invalid("64 hexadecimal digits (optionally prefixed sha256:)")
    return text


def parse_os_variant(value: object) -> str:
    text = str(value).strip().lower()
    if not _VARIANT.fullmatch(text):
        raise Invalid(VARIANT_FORMS)
    return text


def default_user_for(variant: str) -> str | None:
    match = _VARIANT.fullmatch(variant)
    family = match.group(1) if match else "generic"
    if family == "centos":
        # CentOS 7's image logs in as "centos"; CentOS Stream 8+ as "cloud-user"
        version = match.group(2) if match else None
        return "centos" if not version or int(version.split(".")[0]) < 8 else "cloud-user"
    return _VARIANT_USERS.get(family)


def parse_mac(value: object) -> str:
    text = str(value).strip().lower().replace("-", ":")
    if not _MAC.fullmatch(text):
        raise Invalid("six hex pairs separated by ':', e.g. 52:54:00:12:34:56")
    if int(text[:2], 16) & 1:
        raise Invalid("a unicast MAC address (the first octet must be even)")
    return text


def parse_ssh_key(value: object) -> list[str]:
    """A literal public key, or a file of keys (like authorized_keys)."""
    text = str(value).strip()
    if text.startswith(_KEY_TYPES):
        _check_text(text)
        lines = [text]
    else:
        path = _expand_user(text)
        try:
            content = _read_small_text(path, SSH_KEY_FILE_MAX)
        except OSError as error:
            reason = error.strerror or "unreadable"
            raise Invalid(f"an SSH public key or a readable .pub file ({reason})") from None
        except UnicodeDecodeError:
            raise Invalid("an SSH public key file in text form") from None
        lines = [line.strip() for line in content.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not lines:
            raise Invalid("a public key file holding at least one key (this one is empty)")
    for line in lines:
        fields = line.split()
        if not line.startswith(_KEY_TYPES) or len(fields) < 2 or not line.isprintable():
            raise Invalid("OpenSSH public keys ('ssh-ed25519 AAAA... comment')")
    return lines


SSH_KEY_FILE_MAX = 1 << 20


def _read_small_text(path: Path, limit: int) -> str:
    """A regular file's text, refused beyond `limit` bytes (never /dev/zero, a FIFO, a 4 GiB file)."""
    if not path.is_file():  # before opening: opening a FIFO would wait for a writer
        raise OSError(0, "not a regular file")
    with path.open("rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise OSError(0, f"larger than {limit >> 10} KiB")
    return data.decode()


def parse_disk(value: object) -> DataDisk:
    """RunCVM's form PATH,MOUNT,FS,SIZE, or PATH[,SIZE] for an unformatted/existing disk."""
    accepted = "PATH (existing image), PATH,SIZE, or PATH,MOUNT,FS,SIZE (RunCVM_DISKS form)"
    parts = [part.strip() for part in str(value).split(",")]
    if not parts[0]:
        raise Invalid(accepted)
    path = parse_path(parts[0])
    if len(parts) == 1:
        return DataDisk(path=path)
    if len(parts) == 2:
        return DataDisk(path=path, size_mib=parse_size(parts[1], default_unit="G", low_mib=1, high_mib=64 << 20))
    if len(parts) != 4:
        raise Invalid(accepted)
    _, mount, filesystem, size = parts
    if not _is_mount_point(mount):
        raise Invalid(f"{accepted}; MOUNT must be an absolute path other than /, without '.', '..', blanks or "
                      "control characters")  # fmt: skip
    if filesystem.lower() not in FILESYSTEMS:
        raise Invalid(f"{accepted}; FS one of " + ", ".join(FILESYSTEMS))
    size_mib = parse_size(size, default_unit="G", low_mib=1, high_mib=64 << 20)
    return DataDisk(path=path, size_mib=size_mib, filesystem=filesystem.lower(), mount=mount)


def _is_mount_point(text: str) -> bool:
    """An absolute, normal path (it goes into the guest's fstab): /mnt/data, not /mnt/../etc."""
    components = text.split("/")[1:]
    return (
        text.startswith("/") and text != "/" and text.isprintable() and not any(char.isspace() for char in text)
        and all(component not in ("", ".", "..") for component in components)
    )  # fmt: skip


def parse_network(value: object) -> NetworkSpec:
    text = str(value).strip()
    accepted = "default, network:NAME, bridge:NAME, user or none"
    if text in ("default", "nat"):
        return NetworkSpec("network", "default")
    if text in ("user", "none"):
        return NetworkSpec(text, "")  # type: ignore[arg-type]
    kind, _, name = text.partition(":")
    if kind in ("network", "bridge") and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}", name):
        return NetworkSpec(kind, name)  # type: ignore[arg-type]
    raise Invalid(accepted)


PORTS_FORM = (
    "blank-separated rules [tcp:|udp:]PORT[:GUEST-PORT], a PORT may be a range FIRST-LAST "
    "(tcp:8080:80 udp:5353:53 tcp:9000-9010), GUEST-PORT may follow an address in the guest LAN "
    "(tcp:2222:192.168.122.5:22); or none"
)
FORWARDS_FORM = "blank-separated [tcp:|udp:]TARGET-IP:TARGET-PORT:REAL-IP:REAL-PORT (tcp:10.9.9.9:80:172.17.0.1:8080)"


def _port_range(text: str) -> PortRange:
    match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", text)
    if not match:
        raise Invalid(PORTS_FORM)
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if not 1 <= first <= last <= 65535:
        raise Invalid(f"{PORTS_FORM}; ports from 1 to 65535, a range FIRST-LAST with FIRST <= LAST")
    return first, last


def _list_items(value: object) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(item).strip() for item in value if str(item).strip()]
    return [item for item in re.split(r"[\s,;]+", str(value).strip()) if item]


def parse_port_rule(text: str) -> PortRule:
    fields = text.split(":")
    protocol: Protocol = "tcp"
    if fields[0].lower() in ("tcp", "udp"):
        protocol = fields.pop(0).lower()  # type: ignore[assignment]
    target = None
    if len(fields) == 3:
        try:
            target = ipaddress.IPv4Address(fields.pop(1))
        except ValueError:
            raise Invalid(f"{PORTS_FORM}; an IPv4 address before the guest port") from None
        if target.is_unspecified or target.is_loopback or target.is_multicast:
            raise Invalid(f"{PORTS_FORM}; an address in the guest LAN before the guest port")
    if len(fields) not in (1, 2):
        raise Invalid(PORTS_FORM)
    incoming = _port_range(fields[0])
    guest = _port_range(fields[-1])
    if incoming[1] - incoming[0] != guest[1] - guest[0]:
        raise Invalid(f"{PORTS_FORM}; a range maps to a range of the same length")
    return PortRule(protocol, incoming, guest, target)


def parse_port_rules(value: object) -> tuple[PortRule, ...]:
    items = _list_items(value)
    if items == ["none"]:
        return ()
    if not items:
        raise Invalid(PORTS_FORM)
    rules = tuple(parse_port_rule(item) for item in items)
    taken: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    for rule in rules:
        ports = set(range(rule.incoming[0], rule.incoming[1] + 1))
        if ports & taken[rule.protocol]:
            raise Invalid(f"{PORTS_FORM}; each incoming {rule.protocol} port in one rule only")
        taken[rule.protocol] |= ports
    return rules


def _forward_address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise Invalid(f"{FORWARDS_FORM}; {what} must be an IPv4 address") from None
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_reserved:
        raise Invalid(f"{FORWARDS_FORM}; {what} must be a unicast address, not loopback or 0.0.0.0")
    return address


def parse_guest_forward(text: str) -> GuestForward:
    fields = text.split(":")
    protocol: Protocol = "tcp"
    if fields[0].lower() in ("tcp", "udp"):
        protocol = fields.pop(0).lower()  # type: ignore[assignment]
    if len(fields) != 4:
        raise Invalid(FORWARDS_FORM)
    ports = []
    for port in (fields[1], fields[3]):
        if not is_ascii_number(port, digits=5) or not 1 <= int(port) <= 65535:
            raise Invalid(f"{FORWARDS_FORM}; ports from 1 to 65535")
        ports.append(int(port))
    target = _forward_address(fields[0], "TARGET-IP")
    real = _forward_address(fields[2], "REAL-IP")
    return GuestForward(protocol, target, ports[0], real, ports[1])


def parse_guest_forwards(value: object) -> tuple[GuestForward, ...]:
    items = _list_items(value)
    if not items:
        raise Invalid(FORWARDS_FORM)
    forwards = tuple(parse_guest_forward(item) for item in items)
    seen = [(forward.protocol, forward.target, forward.target_port) for forward in forwards]
    if len(set(seen)) != len(seen):
        raise Invalid(f"{FORWARDS_FORM}; each TARGET-IP:TARGET-PORT once")
    return forwards


def parse_flag(value: object) -> bool:
    text = str(value).strip().lower()
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise Invalid("1/true/yes/on or 0/false/no/off")


# Where a guest LAN can never be: "this network", loopback, link-local, multicast, reserved, broadcast
_NOT_A_LAN = tuple(
    ipaddress.IPv4Network(net)
    for net in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
)


def parse_lan(value: object) -> ipaddress.IPv4Network:
    accepted = (
        "an IPv4 network address with its prefix, /8 to /29, e.g. 192.168.199.0/24, outside 0.0.0.0/8, "
        "loopback, link-local, multicast and 240.0.0.0/4"
    )
    try:
        lan = ipaddress.IPv4Network(str(value).strip())
    except ValueError:
        raise Invalid(accepted) from None
    if not 8 <= lan.prefixlen <= 29 or any(lan.overlaps(reserved) for reserved in _NOT_A_LAN):
        raise Invalid(accepted)
    return lan


def parse_stages(value: object) -> tuple[Stage, ...] | None:
    """None means auto (decided from the network and boot mode); exec:CMD adds the exec stage."""
    stages, command = _split_exec_probe(value)
    items = stages if isinstance(stages, list) else str(stages).split(",")
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    if names in (["auto"], []) and command is not None:
        return None  # auto stages, then the probe: resolve_spec adds exec to the defaults
    if names == ["auto"]:
        return None
    accepted = "auto, or a comma-separated list of " + ", ".join(STAGES) + ", optionally ending in exec:CMD"
    if not names or any(name not in STAGES for name in names):
        raise Invalid(accepted)
    if "running" not in names:
        names.insert(0, "running")
    if command is not None:
        names.append("exec")
    return tuple(stage for stage in ALL_STAGES if stage in names)


def parse_ready_command(value: object) -> str | None:
    """The command of a wait_for ending in exec:CMD (everything after exec:, commas included)."""
    _stages, command = _split_exec_probe(value)
    if command is None:
        return None
    command = command.strip()
    if not command or len(command) > 4096 or not command.isprintable():
        raise Invalid("exec:CMD with a command of one printable line, at most 4096 characters")
    return command


def _split_exec_probe(value: object) -> tuple[object, str | None]:
    if isinstance(value, list):
        probes = [str(item) for item in value if str(item).strip().lower().startswith(EXEC_PROBE)]
        if not probes:
            return value, None
        rest = [item for item in value if str(item) not in probes]
        return rest, probes[-1].strip()[len(EXEC_PROBE) :]
    text = str(value)
    at = text.lower().find(EXEC_PROBE)
    if at < 0:
        return text, None
    return text[:at], text[at + len(EXEC_PROBE) :]


def parse_cmdline(value: object) -> str:
    text = str(value)
    accepted = "one line of at most 2048 printable characters"
    if len(text) > 2048:
        raise Invalid(accepted)
    try:
        _check_text(text)
    except Invalid:
        raise Invalid(accepted) from None
    return text


def parse_profile(value: object) -> str:
    name = canonical_profile(str(value))
    if name is None:
        raise Invalid(profile_names())
    return name


def parse_vnc(value: object) -> int | None:
    """None: off; 0: auto (libvirt picks a free port from 5900); else the TCP port."""
    text = str(value).strip().lower()
    if text in ("off", "none", *_NO):
        return None
    if text in ("on", "yes", "true"):
        return VNC_BASE_PORT
    if text == "auto":
        return 0
    if not is_ascii_number(text, digits=5) or not VNC_BASE_PORT <= int(text) <= 65535:
        raise Invalid("off, on (port 5900), auto, or a TCP port from 5900 to 65535")
    return int(text)


def parse_listen_address(value: object) -> str:
    accepted = "an IPv4 or IPv6 address, e.g. 127.0.0.1 or 0.0.0.0 (all)"
    text = str(value).strip()
    if "%" in text:  # an IPv6 scope: any text at all, which would reach QEMU's command line
        raise Invalid(accepted)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Invalid(accepted) from None


def parse_vnc_password(value: object) -> str:
    text = str(value)
    if not re.fullmatch(r"[\x20-\x7e]{1,8}", text):
        raise Invalid("1 to 8 printable ASCII characters (VNC authentication uses at most 8)")
    return text


def parse_storage_id(value: object) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", text):
        raise Invalid("a directory name: letters, digits, '.', '_' or '-', starting with a letter or digit")
    return text


def supravm_data_disks(storage_dir: Path) -> tuple[DataDisk, ...]:
    """data0.qcow2, data1.qcow2, ... in order, stopping at the first gap (as SupraVM does)."""
    disks: list[DataDisk] = []
    while (path := storage_dir / f"data{len(disks)}.qcow2").is_file():
        disks.append(DataDisk(path=path))
    return tuple(disks)


# ---------------------------------------------------------------------------------------------
# Resolution: raw settings -> VmSpec.


class _Reader:
    """Reads one raw setting at a time, turning parser failures into ConfigError."""

    def __init__(self, raw: Mapping[str, RawValue]) -> None:
        self.raw = raw

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, parse: Callable[[Any], Any], default: Any = None) -> Any:
        item = self.raw.get(key)
        if item is None:
            return default
        value = self._parse(key, item, parse)
        for other in item.others:  # the same setting under another name: it must agree
            if self._parse(key, other, parse) != value:
                raise self._conflict(key, item, other)
        return value

    def _parse(self, key: str, item: RawValue, parse: Callable[[Any], Any]) -> Any:
        try:
            if isinstance(item.value, Mapping):
                raise Invalid("a single value, not a mapping")
            return parse(item.value)
        except Invalid as invalid:
            raise ConfigError(item.origin, self._shown(key, item.value), str(invalid)) from None

    def _shown(self, key: str, value: object) -> object:
        return "***" if SETTINGS_BY_KEY[key].secret else value

    def _conflict(self, key: str, item: RawValue, other: RawValue) -> ConfigError:
        shown = self._shown(key, item.value)
        first = f"'{shown}'" if isinstance(shown, str) and shown.isprintable() else repr(shown)
        return ConfigError(
            other.origin, self._shown(key, other.value),
            f"the same setting as {item.origin}={first}, with another value: set one of the two, or both alike",
        )  # fmt: skip

    def origin(self, key: str) -> str:
        """The name the user gave a setting (RAM, --memory), or its key when it is a default."""
        item = self.raw.get(key)
        return item.origin if item is not None else key

    def fail(self, key: str, accepted: str, value: object = None) -> ConfigError:
        """The error for `key`: named as the user wrote it, or by its key when it was a default."""
        item = self.raw.get(key)
        if item is None:
            return ConfigError(key, value, accepted)
        return ConfigError(item.origin, "***" if SETTINGS_BY_KEY[key].secret else item.value, accepted)

    def items(self, key: str, parse: Callable[[Any], Any]) -> list[Any]:
        item = self.raw.get(key)
        if item is None:
            return []
        parsed = self._items(key, item, parse)
        for other in item.others:
            if self._items(key, other, parse) != parsed:
                raise self._conflict(key, item, other)
        return parsed

    def _items(self, key: str, item: RawValue, parse: Callable[[Any], Any]) -> list[Any]:
        values = item.value if isinstance(item.value, list) else [item.value]
        if any(isinstance(value, list | Mapping) for value in values):
            raise ConfigError(item.origin, self._shown(key, item.value), "a list of single values")
        return [self._parse(key, RawValue(value, item.origin), parse) for value in values]


def resolve_spec(raw: Mapping[str, RawValue], host: HostFacts | None = None) -> VmSpec:
    """Validate raw settings once and return the spec. Pure except for reading named files."""
    host = host or HostFacts.probe()
    read = _Reader(raw)
    name = read.get("name", parse_name, "vm")
    vcpus = read.get("vcpus", lambda v: parse_int(v, 1, 256), min(host.cpus, 4))
    default_memory = max(512, min(host.memory_mib // 4, 4096))
    memory_mib = read.get(
        "memory", lambda v: parse_size(v, default_unit="M", low_mib=64, high_mib=4 << 20), default_memory
    )
    disk_size_mib = read.get(
        "disk_size", lambda v: parse_size(v, default_unit="G", low_mib=64, high_mib=64 << 20)
    )
    image = _resolve_image(read)
    os_variant = read.get("os_variant", parse_os_variant, "generic")
    default_user = read.get("user", _parse_user, default_user_for(os_variant))
    hostname = read.get("hostname", parse_hostname, _hostname_from(name))
    state_dir = read.get("state_dir", parse_path, DEFAULT_STATE_ROOT / name)
    profile = read.get("profile", parse_profile, "linux")
    storage_dir = _resolve_storage_dir(read, profile)
    diff_path = storage_dir / "sys.qcow2" if storage_dir else _resolve_diff_path(read, state_dir, image)
    data_disks = (supravm_data_disks(storage_dir) if storage_dir else ()) + tuple(read.items("disks", parse_disk))
    if storage_dir and not (image.path or image.url) and not diff_path.exists():
        raise read.fail("storage_id", f"a directory holding sys.qcow2 ({diff_path} does not exist), or set image")
    keys = [key for keys in read.items("ssh_keys", parse_ssh_key) for key in keys]
    password = read.get("password", _parse_password)
    policy = read.get("password_policy", lambda v: parse_choice(v, ("auto", "random", "fixed", "none")))
    policy = policy or ("fixed" if password else "auto")
    if policy == "fixed" and not password:
        raise read.fail("password_policy", "fixed needs a password (set VIRTAINER_PASSWORD or --password)")
    direct_boot = _resolve_direct_boot(read)
    network = _resolve_network_control(read, read.get("network", parse_network, NetworkSpec()), host)
    stages = read.get("wait_for", parse_stages)
    ready_command = read.get("wait_for", parse_ready_command)
    probe = ready_command is not None
    hardware = _resolve_hardware(read, profile, supravm=storage_dir is not None, host=host)
    # Windows and SupraVM system disks are not virtainer's cloud images: no cloud-init to wait for
    cloud_image = PROFILES[profile].family == "linux" and storage_dir is None
    spec = VmSpec(
        name=name,
        vcpus=vcpus,
        memory_mib=memory_mib,
        image=image,
        diff_path=diff_path,
        state_dir=state_dir,
        os_variant=os_variant,
        default_user=default_user,
        hostname=hostname,
        disk_size_mib=disk_size_mib,
        accelerator=read.get("accelerator", lambda v: parse_choice(v, ("auto", "kvm", "tcg")), "auto"),
        ssh_authorized_keys=tuple(dict.fromkeys(keys)),
        user_data=read.get("user_data", parse_existing_file),
        meta_data=read.get("meta_data", parse_existing_file),
        network_config=read.get("network_config", parse_existing_file),
        seed_iso=read.get("seed_iso", parse_existing_file),
        seed_path=read.get("seed_path", parse_path),
        password=password,
        password_policy=policy,
        mac_address=read.get("mac", parse_mac),
        data_disks=data_disks,
        network=network,
        direct_boot=direct_boot,
        wait_for=stages or default_stages(network, direct_boot, cloud_image=cloud_image, exec_probe=probe),
        ready_command=ready_command,
        boot_timeout_s=read.get("boot_timeout", parse_seconds, 600.0),
        stop_timeout_s=read.get("stop_timeout", parse_seconds, 60.0),
        profile=profile,
        vnc=_resolve_vnc(read, host),
        storage_dir=storage_dir,
        **hardware,
    )
    check_distinct_files(spec, read.origin)
    _check_display(spec, read)
    _check_disk_bus_room(spec, read)
    return spec


def default_stages(
    network: NetworkSpec, direct_boot: DirectBoot | None, *, cloud_image: bool = True, exec_probe: bool = False
) -> tuple[Stage, ...]:
    stages = _default_boot_stages(network, direct_boot, cloud_image=cloud_image)
    return (*stages, "exec") if exec_probe else stages


def _default_boot_stages(
    network: NetworkSpec, direct_boot: DirectBoot | None, *, cloud_image: bool
) -> tuple[Stage, ...]:
    if direct_boot is not None:
        return ("running",)  # a bare kernel has no agent or cloud-init to wait for
    if not cloud_image:
        return ("running",) if network.mode == "none" else ("running", "ip")
    if network.mode == "none":
        return ("running", "agent", "cloud-init")
    if network.mode == "user" and network.incoming_port(22) is None:
        return ("running", "ip", "agent", "cloud-init")  # the guest's SSH cannot be reached from here
    return STAGES


NETWORK_CONTROL = ("ports", "guest_forwards", "guest_restrict", "guest_lan")


def _resolve_network_control(read: _Reader, network: NetworkSpec, host: HostFacts) -> NetworkSpec:
    """Ports, guest forwards, isolation and the LAN: done by the virtainer container's NAT network
    (iptables), or by QEMU's user-mode networking (port by port; no forwards there)."""
    given = [key for key in NETWORK_CONTROL if read.has(key)]
    if not given:
        return network
    in_container_nat = network.mode == "network" and network.source == "default" and host.in_container
    if network.mode != "user" and not in_container_nat:
        raise read.fail(
            given[0], "set only with user-mode networking (network=user) or in the virtainer container "
            "(network=default)"
        )  # fmt: skip
    network = replace(
        network,
        ports=read.get("ports", parse_port_rules),
        forwards=read.get("guest_forwards", parse_guest_forwards, ()),
        restrict=read.get("guest_restrict", parse_flag, False),
        lan=read.get("guest_lan", parse_lan),
    )
    if network.forwards and network.mode == "user":
        raise read.fail(
            "guest_forwards", "guest forwards only on the container's NAT network (network=default); "
            "user-mode networking cannot carry them"
        )  # fmt: skip
    check_port_targets(network, lambda accepted: read.fail("ports", accepted))
    if network.mode == "user":
        check_user_mode_ports(network, lambda accepted: read.fail("ports", accepted))
    return network


def check_user_mode_ports(network: NetworkSpec, fail: Callable[[str], Exception]) -> None:
    count = sum(len(rule.pairs()) for rule in network.ports or ())
    if count > USER_FORWARDS_MAX:
        raise fail(
            f"at most {USER_FORWARDS_MAX} ports with user-mode networking (QEMU forwards port by port; "
            f"these rules name {count})"
        )


def check_port_targets(network: NetworkSpec, fail: Callable[[str], Exception]) -> None:
    """A rule's target address (other than the guest's own) must lie in the guest LAN."""
    if network.lan is None:
        return
    for rule in network.ports or ():
        if rule.target is not None and rule.target not in network.lan:
            raise fail(f"target addresses inside the guest LAN {network.lan} ({rule.target} is not)")


def _resolve_storage_dir(read: _Reader, profile: str) -> Path | None:
    """SupraVM's layout: STORAGE_ROOT/{windows|linux}/{VM_STORAGE_ID}/, named after the profile's family."""
    storage_id = read.get("storage_id", parse_storage_id)
    if storage_id is None:
        if read.has("storage_root"):
            raise read.fail("storage_root", "a storage root only together with storage_id (VM_STORAGE_ID)")
        return None
    for key in ("diff", "image_dir"):
        if read.has(key):
            raise read.fail(key, "either a diff path or storage_id (SupraVM's layout), not both")
    root = read.get("storage_root", parse_path, SUPRAVM_ROOT)
    return root / PROFILES[profile].family / storage_id


def _resolve_hardware(read: _Reader, profile_name: str, *, supravm: bool, host: HostFacts) -> dict[str, Any]:
    """The profile's defaults, overridden setting by setting.

    SupraVM's layout brings SupraVM's hardware contract: its system disks carry the virtio drivers
    and boot with UEFI on q35 (legacy BIOS for windows-7/-2003/-xp, machine pc for -2003/-xp).
    """
    profile = PROFILES[profile_name]
    if read.has("windows_drivers") and profile.family != "windows":
        raise read.fail("windows_drivers", "set only with a windows profile (profile=windows, windows-7, ...)")
    drivers = read.get(
        "windows_drivers", lambda v: parse_choice(v, ("virtio", "none")), "virtio" if supravm else "none"
    )
    virtio = profile.family == "linux" or drivers == "virtio"
    old_chipset = profile.name in ("windows-2003", "windows-xp")
    machine = read.get(
        "machine", lambda v: parse_choice(v, MACHINES), "q35" if supravm and not old_chipset else profile.machine
    )
    firmware = read.get(
        "firmware", lambda v: parse_choice(v, ("bios", "uefi")), "uefi" if supravm and not profile.legacy else "bios"
    )
    if firmware == "uefi" and profile.legacy:
        raise read.fail("firmware", f"bios: {profile.name} boots with legacy BIOS only")
    if firmware == "uefi" and host.uefi is None:
        raise read.fail("firmware", "bios: OVMF, which uefi needs, is not installed (apt-get install ovmf)", "uefi")
    tpm = read.get("tpm", lambda v: parse_choice(v, ("none", "emulated")), "none") == "emulated"
    if tpm and not host.swtpm:
        raise read.fail("tpm", "none: swtpm is not installed (apt-get install swtpm swtpm-tools)")
    default_bus = "virtio" if virtio else profile.disk_bus
    if default_bus == "ide" and machine == "q35":
        default_bus = "sata"  # q35 has no IDE controller: its AHCI is what IDE disks become there
    disk_bus = read.get("disk_bus", lambda v: parse_choice(v, DISK_BUSES), default_bus)
    if disk_bus == "ide" and machine == "q35":
        raise read.fail(
            "disk_bus" if read.has("disk_bus") else "machine",
            "IDE disks only with machine pc (q35 has no IDE controller; use sata there)",
            machine,
        )
    cache = read.get("disk_cache", lambda v: parse_choice(v, DISK_CACHES), "default")
    return {
        "machine": machine,
        "firmware": firmware,
        "uefi": host.uefi if firmware == "uefi" else None,
        "tpm": tpm,
        "clock_offset": read.get("clock", lambda v: parse_choice(v, ("utc", "localtime")), profile.clock),
        "disk_bus": disk_bus,
        "disk_cache": None if cache == "default" else cache,
        "nic_model": "virtio" if virtio else profile.nic_model,
        "virtio_drivers": virtio,
        "video": read.get("video", lambda v: parse_choice(v, VIDEO_MODELS), profile.video),
    }


def _resolve_vnc(read: _Reader, host: HostFacts) -> VncSpec | None:
    port = read.get("vnc", parse_vnc)
    if port is None:
        for key in ("vnc_listen", "vnc_password"):
            if read.has(key):
                raise read.fail(key, "set only together with vnc (e.g. vnc=5900)")
        return None
    # In a container, VNC is reached through the container's published port: listen on all of
    # the container's addresses, as SupraVM and RunCVM do. On a host, only locally by default.
    listen = read.get("vnc_listen", parse_listen_address, "0.0.0.0" if host.in_container else "127.0.0.1")
    password = read.get("vnc_password", parse_vnc_password)
    return VncSpec(port=port or None, listen=listen, password=password)


def _check_display(spec: VmSpec, read: _Reader) -> None:
    if spec.vnc is not None and spec.video == "none":
        raise read.fail("video", "a display adapter for VNC to show (virtio, vga, cirrus or bochs), or vnc=off")


DISK_NAMES_PER_PREFIX = 26  # vda..vdz, sda..sdz: the targets domain.disk_values hands out


def _check_disk_bus_room(spec: VmSpec, read: _Reader) -> None:
    disks = 1 + len(spec.data_disks)
    if spec.disk_bus == "ide" and spec.seed_bus == "ide" and disks > IDE_DISKS_MAX:
        raise read.fail(
            "disk_bus",
            f"at most {IDE_DISKS_MAX} IDE disks (the seed cdrom takes the 4th unit); "
            f"this VM has {disks}: use sata or virtio",
            spec.disk_bus,
        )
    if spec.disk_bus == "ide" and disks > IDE_DISKS_MAX + 1:
        raise read.fail("disk_bus", f"at most {IDE_DISKS_MAX + 1} IDE disks; this VM has {disks}: use sata or virtio",
                        spec.disk_bus)  # fmt: skip
    # virtio disks are vdX, SCSI and SATA ones sdX: the system disk, the data disks, and the seed
    # (a virtio disk, or a SATA cdrom on q35) share 26 names per prefix
    prefix = "vd" if spec.disk_bus == "virtio" else "sd"
    seed_shares = spec.seed_bus == ("virtio" if prefix == "vd" else "sata")
    room = DISK_NAMES_PER_PREFIX - 1 - int(seed_shares)
    if spec.disk_bus != "ide" and len(spec.data_disks) > room:
        names = f"{prefix}a..{prefix}z"
        raise read.fail(
            "disks", f"at most {room} data disks on the {spec.disk_bus} bus ({names}: the system disk"
            f"{' and the seed' if seed_shares else ''} take the rest); this VM has {len(spec.data_disks)}",
            f"{len(spec.data_disks)} disks",
        )  # fmt: skip


def _parse_user(value: object) -> str:
    text = str(value)
    if not _USER.fullmatch(text):
        raise Invalid("a Unix user name: lowercase letters, digits, '_' or '-', at most 32")
    return text


def _parse_password(value: object) -> str:
    text = str(value)
    if not 8 <= len(text) <= 128 or not text.isprintable():
        raise Invalid("8 to 128 printable characters on one line")
    return text


def _hostname_from(name: str) -> str:
    label = re.sub(r"[^A-Za-z0-9-]", "-", name).strip("-")[:63]
    return label or "vm"


def _resolve_image(read: _Reader) -> ImageSource:
    path = read.get("image", parse_existing_file)
    url = read.get("image_url", parse_url)
    sha256 = read.get("image_sha256", parse_sha256)
    if path and url:
        raise read.fail("image_url", "either an image path or an image URL, not both")
    if url and url.lower().startswith("file://"):
        # a local file, named as a URL: used like a path (image_sha256, when given, is checked)
        path = read.get("image_url", lambda value: parse_existing_file(_file_url_path(str(value).strip())))
        url = None
    return ImageSource(path=path, url=url, sha256=sha256)


def _resolve_diff_path(read: _Reader, state_dir: Path, image: ImageSource) -> Path:
    if read.has("diff"):
        diff = read.get("diff", parse_path)
    elif read.has("image_dir"):
        diff = read.get("image_dir", parse_path) / "local_image.qcow2"
    else:
        diff = state_dir / "diff.qcow2"
    if diff.is_dir():
        raise read.fail("diff" if read.has("diff") else "image_dir", "a file path for the diff, not a directory")
    return diff


def _resolve_direct_boot(read: _Reader) -> DirectBoot | None:
    kernel = read.get("kernel", parse_existing_file)
    initrd = read.get("initrd", parse_existing_file)
    cmdline = read.get("cmdline", parse_cmdline, "")
    if kernel is None:
        if initrd is not None:
            raise read.fail("initrd", "an initrd only together with a kernel (set kernel too)")
        if cmdline:
            raise read.fail("cmdline", "a command line only together with a kernel (set kernel too)")
        return None
    return DirectBoot(kernel=kernel, initrd=initrd, cmdline=cmdline)


def spec_with(spec: VmSpec, **changes: Any) -> VmSpec:
    return replace(spec, **changes)
