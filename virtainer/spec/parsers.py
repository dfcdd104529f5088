"""Field parsers: each takes what the user wrote and returns a typed value or raises Invalid.

Invalid's text says what is accepted; the settings reader turns it into a ConfigError naming
the setting as the user wrote it. The network's parsers are in `virtainer.spec.network`.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from virtainer.profiles import canonical_profile, profile_names
from virtainer.spec.model import FILESYSTEMS, VNC_BASE_PORT, DataDisk
from virtainer.stages import EXEC_PROBE, STAGES, Stage, in_order
from virtainer.units import SIZE_FORMS, parse_size_mib
from virtainer.validators import NO, Invalid

Choice = TypeVar("Choice", bound=str)

# Patterns are used with fullmatch only: `$` also matches before a trailing newline ("vm\n")
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


def parse_choice(value: object, choices: Iterable[Choice]) -> Choice:
    options = tuple(choices)
    text = str(value).strip().lower()
    for option in options:
        if option == text:
            return option
    raise Invalid("one of " + ", ".join(options))


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


def file_url_path(url: str) -> str:
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
    """RunCVM's form PATH,MOUNT,FS[,SIZE] (no size: PATH exists), or PATH[,SIZE] for an
    unformatted/existing disk."""
    accepted = "PATH (existing image), PATH,SIZE, or PATH,MOUNT,FS[,SIZE] (RunCVM_DISKS form)"
    parts = [part.strip() for part in str(value).split(",")]
    if not parts[0]:
        raise Invalid(accepted)
    path = parse_path(parts[0])
    if len(parts) == 1:
        return DataDisk(path=path)
    if len(parts) == 2:
        return DataDisk(path=path, size_mib=parse_size(parts[1], default_unit="G", low_mib=1, high_mib=64 << 20))
    if len(parts) not in (3, 4):
        raise Invalid(accepted)
    mount, filesystem = parts[1:3]
    if not _is_mount_point(mount):
        raise Invalid(f"{accepted}; MOUNT must be an absolute path other than /, without '.', '..', blanks or "
                      "control characters")  # fmt: skip
    if filesystem.lower() not in FILESYSTEMS:
        raise Invalid(f"{accepted}; FS one of " + ", ".join(FILESYSTEMS))
    size_mib = parse_size(parts[3], default_unit="G", low_mib=1, high_mib=64 << 20) if len(parts) == 4 else None
    return DataDisk(path=path, size_mib=size_mib, filesystem=filesystem.lower(), mount=mount)


def _is_mount_point(text: str) -> bool:
    """An absolute, normal path (it goes into the guest's fstab): /mnt/data, not /mnt/../etc."""
    components = text.split("/")[1:]
    return (
        text.startswith("/") and text != "/" and text.isprintable() and not any(char.isspace() for char in text)
        and all(component not in ("", ".", "..") for component in components)
    )  # fmt: skip


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
    return in_order(names)


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
    if text in ("off", "none", *NO):
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


def parse_user(value: object) -> str:
    text = str(value)
    if not _USER.fullmatch(text):
        raise Invalid("a Unix user name: lowercase letters, digits, '_' or '-', at most 32")
    return text
