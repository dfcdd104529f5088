"""Settings as a container sees them.

The VM's settings come from three layers, later ones winning:

1. the image's baked defaults (`image.json` written at build time: the guest image, its OS
   variant), dropped when the user names another image;
2. the files virtainers users mount: `/tmp/id_rsa.pub` (SSH key), `/tmp/user-data`,
   `/tmp/meta-data`, `/tmp/cloud_init.iso` (a prebuilt seed, used as is);
3. environment variables (canonical `VIRTAINER_*` and the aliases `RAM`, `CPU`, `VM_NAME`, ...).

The diff lives at `$IMAGE_DIR/local_image.qcow2`, `/mounted` by default, as virtainers users
expect. Controller-only settings (not part of the VM spec) are read by `controller_config`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from virtainer.errors import ConfigError
from virtainer.spec import PortRange, Protocol, RawSettings, RawValue, merge_settings, settings_from_env
from virtainer.validators import flag_setting

IMAGES_DIR = Path("/var/lib/virtainer/images")
BAKED_RECORD = IMAGES_DIR / "image.json"
DEFAULT_IMAGE_DIR = Path("/mounted")
RUN_DIR = Path("/run/virtainer")

# virtainers' mount points -> the spec setting each one feeds
MOUNTED_FILES: dict[str, Path] = {
    "ssh_keys": Path("/tmp/id_rsa.pub"),
    "user_data": Path("/tmp/user-data"),
    "meta_data": Path("/tmp/meta-data"),
    "seed_iso": Path("/tmp/cloud_init.iso"),
}


@dataclass(frozen=True)
class BakedImage:
    """The guest image a distro variant carries (see container/fetch-image.py)."""

    path: Path
    os_variant: str
    sha256: str
    source: str

    @classmethod
    def load(cls, record: Path = BAKED_RECORD) -> BakedImage | None:
        try:
            data = json.loads(record.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise ConfigError("baked image record", str(record), f"readable JSON ({error})") from None
        return cls(Path(data["path"]), data.get("os_variant", ""), data.get("sha256", ""), data.get("source", ""))


def container_settings(
    environ: Mapping[str, str],
    *,
    baked: BakedImage | None,
    mounted: Mapping[str, Path] = MOUNTED_FILES,
) -> RawSettings:
    """The VM's raw settings: baked defaults < mounted files < environment."""
    env = settings_from_env(environ)
    defaults: RawSettings = {}
    if baked is not None and "image" not in env and "image_url" not in env:
        defaults["image"] = RawValue(str(baked.path), "the image's baked guest image")
        if baked.os_variant:
            defaults["os_variant"] = RawValue(baked.os_variant, "the image's baked OS variant")
    if "diff" not in env and "image_dir" not in env and "storage_id" not in env:  # VM_STORAGE_ID: SupraVM's
        defaults["image_dir"] = RawValue(str(DEFAULT_IMAGE_DIR), "IMAGE_DIR (default)")
    files: RawSettings = {}
    for key, path in mounted.items():
        origin = f"{path} (mounted file)"
        if path.is_dir():
            raise ConfigError(
                origin,
                str(path),
                "a file, but this is a directory (Docker makes one when the host path given to -v does not exist)",
            )
        if path.exists() or path.is_symlink():
            value: object = [str(path)] if key == "ssh_keys" else str(path)
            files[key] = RawValue(value, origin)
    return merge_settings(defaults, files, env)


RESERVED_PORTS_FORM = "[tcp:|udp:]PORT[-LAST] separated by blanks or commas (8443, udp:5353, tcp:9000-9010)"


def _parse_reserved_ports(value: str, origin: str) -> tuple[tuple[Protocol, PortRange], ...]:
    """Ports the container keeps for itself; a bare port is TCP."""
    reserved: list[tuple[Protocol, PortRange]] = []
    for part in value.replace(",", " ").split():
        protocol, _, ports = part.rpartition(":")
        match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", ports)  # ASCII: \d takes any script's digits
        first = int(match.group(1)) if match else 0
        last = int(match.group(2) or first) if match else 0
        if protocol.lower() not in ("", "tcp", "udp") or not 1 <= first <= last <= 65535:
            raise ConfigError(origin, value, RESERVED_PORTS_FORM + ", ports from 1 to 65535")
        reserved.append(((protocol.lower() or "tcp"), (first, last)))  # type: ignore[arg-type]
    return tuple(dict.fromkeys(reserved))


@dataclass(frozen=True)
class ControllerConfig:
    """Settings of the controller itself (not of the VM)."""

    uri: str = "qemu:///system"
    # ports the container keeps for itself, beyond the REST API's and VNC's: never forwarded to
    # the guest (VIRTAINER_RESERVED_PORTS, formerly VIRTAINER_CONTROLLER_PORTS)
    reserved_ports: tuple[tuple[Protocol, PortRange], ...] = ()
    console_log: bool = True  # mirror the serial console into docker logs
    # the guest may reach the REST API and VNC of its own container (VIRTAINER_GUEST_CONTROL_ACCESS)
    guest_control_access: bool = False
    run_dir: Path = RUN_DIR
    libvirtd_log: Path = Path("/var/log/libvirt/libvirtd.log")
    libvirtd_start_timeout_s: float = 120.0
    libvirtd_max_restarts: int = 5  # within libvirtd_restart_window_s; beyond that, give up
    libvirtd_restart_window_s: float = 300.0

    @property
    def ready_file(self) -> Path:
        return self.run_dir / "ready"


def controller_config(environ: Mapping[str, str]) -> ControllerConfig:
    both = ("VIRTAINER_RESERVED_PORTS", "VIRTAINER_CONTROLLER_PORTS")  # the current name, the former one
    names = [name for name in both if environ.get(name, "").strip()]
    reserved = [_parse_reserved_ports(environ[name], name) for name in names]
    if len(reserved) == 2 and set(reserved[0]) != set(reserved[1]):  # one setting, two names: they must agree
        raise ConfigError(names[1], environ[names[1]], f"the same setting as {names[0]}='{environ[names[0]]}', "
                          "with another value: set one of the two, or both alike")  # fmt: skip
    console_text = environ.get("VIRTAINER_CONSOLE_LOG", "1")
    return ControllerConfig(
        uri=environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system",
        reserved_ports=reserved[0] if reserved else (),
        console_log=flag_setting("VIRTAINER_CONSOLE_LOG", console_text),
        guest_control_access=flag_setting(
            "VIRTAINER_GUEST_CONTROL_ACCESS", environ.get("VIRTAINER_GUEST_CONTROL_ACCESS", "0")
        ),
    )
