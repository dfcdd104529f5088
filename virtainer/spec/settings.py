"""Settings: one table drives the file keys, environment variables and CLI flags.

Each raw setting is remembered with the name the user wrote (`RAM`, `--memory`, `memory
(vm.yaml)`), so that `resolve_spec` names it in an error. Environment variables are read under
the canonical `VIRTAINER_*` name and the names of the systems users come from (see `dialects`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from virtainer.errors import ConfigError
from virtainer.spec.dialects import AliasTranslator, runcvm, supravm, virtainers


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
class Setting:
    key: str
    help: str
    env_aliases: tuple[str, ...] = ()  # other names: virtainer's own, then the dialects' (see SETTINGS)
    multi: bool = False  # a list: repeated flag, list in a file, ';'-separated in env
    secret: bool = False

    @property
    def env(self) -> str:
        return "VIRTAINER_" + self.key.upper()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env_names(self) -> tuple[str, ...]:
        return (self.env, *self.env_aliases)


_TABLE: tuple[Setting, ...] = (
    Setting("name", "domain name (default vm)"),
    Setting("vcpus", "virtual CPUs (default: from the host, at most 4)"),
    Setting("memory", "memory, e.g. 1G or 1024 (MiB)"),
    Setting("disk_size", "grow the disk to this size, e.g. 20G (bare number = GiB)", ("DISK_SIZE",)),
    Setting("image", "base image: local path"),
    Setting("image_url", "base image: http(s) URL to download"),
    Setting("image_sha256", "expected sha256 of the base image", ("IMAGE_SHA256",)),
    Setting("os_variant", "guest OS, e.g. debian12, fedora40, ubuntu24.04, generic"),
    Setting("user", "the image's default login user (default: from os_variant)"),
    Setting("hostname", "guest hostname (default: the name)"),
    Setting("accelerator", "auto, kvm or tcg", ("VIRTAINER_ACCEL",)),
    Setting("ssh_keys", "SSH public key, or a file holding keys", multi=True),
    Setting("user_data", "cloud-init user-data file"),
    Setting("meta_data", "cloud-init meta-data file"),
    Setting("network_config", "cloud-init network-config file"),
    Setting("seed_iso", "prebuilt cloud-init seed ISO, used as is"),
    Setting("seed_path", "where the generated seed ISO is written"),
    Setting("password", "fixed password for the default user (asks for one explicitly)", secret=True),
    Setting("password_policy", "auto, random, fixed or none"),
    Setting("mac", "MAC address of the NIC"),
    Setting("disks", "extra disk: PATH[,SIZE] or PATH,MOUNT,FS[,SIZE]", multi=True),
    Setting("network", "default, network:NAME, bridge:NAME, user or none"),
    Setting("ports", "ports that reach the guest: [tcp:|udp:]PORT[-LAST][:GUEST-PORT] ... or none "
            "(default: every port but the container's own; with user-mode networking tcp:22)"),
    Setting("guest_forwards", "guest connections carried elsewhere: [tcp:|udp:]TARGET-IP:PORT:REAL-IP:PORT ..."),
    Setting("guest_restrict", "1: the guest reaches nothing but its guest_forwards; inbound ports still work "
            "(with network=user only from this host's loopback)"),
    Setting("guest_lan", "the guest's LAN, e.g. 192.168.199.0/24 (default: one no route of the container uses)"),
    Setting("diff", "path of the qcow2 diff (the VM's persistent disk)"),
    Setting("image_dir", f"directory for the diff, as {virtainers.DIFF_NAME}"),
    Setting("state_dir", "directory for the seed, serial log and domain XML"),
    Setting("kernel", "boot this kernel directly"),
    Setting("initrd", "initrd for --kernel"),
    Setting("cmdline", "kernel command line for --kernel"),
    Setting("machine", "machine type: pc or q35 (default: from the profile)"),
    Setting("profile", "guest hardware: linux (default), windows, windows-7, windows-2003, windows-xp"),
    Setting("windows_drivers", "virtio (the guest has virtio-win drivers) or none: SATA disks and e1000"),
    Setting("firmware", "bios or uefi (OVMF; its NVRAM is kept beside the diff)"),
    Setting("tpm", "none or emulated (swtpm, TPM 2.0)"),
    Setting("clock", "the guest's RTC: utc or localtime (default: localtime for Windows)"),
    Setting("disk_bus", "virtio, scsi, sata or ide (default: from the profile)"),
    Setting("disk_cache", "default (QEMU's writeback), none, writeback, writethrough, unsafe or directsync"),
    Setting("video", "display adapter: virtio, vga, cirrus, bochs or none (default: from the profile)"),
    Setting("vnc", "VNC display: off (default), on (port 5900), auto or a port"),
    Setting("vnc_listen", "address VNC listens on (default 127.0.0.1; 0.0.0.0 in a container)"),
    Setting("vnc_password", "VNC password, 1 to 8 characters", secret=True),
    Setting("storage_id", "SupraVM layout: use STORAGE_ROOT/{windows|linux}/ID/sys.qcow2 and dataN.qcow2"),
    Setting("storage_root", f"root of the SupraVM layout (default {supravm.ROOT})"),
    Setting(
        "wait_for",
        "readiness stages to wait for: auto or running,ip,agent,cloud-init,ssh; a last exec:CMD waits "
        "until CMD exits 0 in the guest (through its agent)",
    ),
    Setting("boot_timeout", "seconds to wait for readiness"),
    Setting("stop_timeout", "seconds a graceful stop may take before the VM is destroyed"),
)  # fmt: skip
# The dialects' names follow virtainer's own, in this order: where a setting is set under
# several names, the first found is read and the others must agree with it.
DIALECTS = (virtainers, supravm, runcvm)


def _dialect_names(key: str) -> tuple[str, ...]:
    return tuple(name for dialect in DIALECTS for name in dialect.ALIASES.get(key, ()))


SETTINGS: tuple[Setting, ...] = tuple(
    replace(setting, env_aliases=(*setting.env_aliases, *_dialect_names(setting.key))) for setting in _TABLE
)
SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}
# An alias whose values mean something else than the canonical setting's is translated first
TRANSLATE: dict[str, AliasTranslator] = {
    name: translate for dialect in DIALECTS for name, translate in dialect.TRANSLATE.items()
}


def settings_from_env(environ: Mapping[str, str]) -> RawSettings:
    """Collect settings from environment variables. A setting set under several of its names
    (VIRTAINER_MEMORY, RAM, VM_RAM) is read under the first; the others must mean the same."""
    raw: RawSettings = {}
    for setting in SETTINGS:
        for name in setting.env_names:
            value = environ.get(name)
            if value is not None and value != "":
                if (translate := TRANSLATE.get(name)) is not None:
                    value = translate(name, value, environ)
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
