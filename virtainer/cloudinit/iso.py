"""The NoCloud seed on disk: a small ISO9660 image labelled `cidata`, and private files.

The ISO carries three name spaces so every reader sees the real file names: Rock Ridge (what
Linux, and so cloud-init, uses), Joliet (readers without Rock Ridge) and plain ISO9660 level 3,
whose names are upper case without '-' (USERDATA.;1) and only a last resort.

pycdlib stamps the current time into the volume descriptors and directory records and offers no
way to fix it, so two ISOs of the same `Seed` differ in those dates. The files inside, and with
them the instance-id, are identical; compare `Seed.files` or `Seed.instance_id` to see whether
an existing ISO is still current.

Everything written here may hold secrets (passwords, private user-data), so it is written
atomically with mode 0600 (virtainer.files): under a unique temporary name in the same directory,
fsynced, then renamed over `path`. On any failure `path` is left as it was.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from virtainer.cloudinit.seed import META_DATA, NETWORK_CONFIG, USER_DATA, VENDOR_DATA, Seed
from virtainer.errors import ConfigError, VirtainerError
from virtainer.files import write_atomic_with

SEED_VOLUME_LABEL = "cidata"  # lower case: older cloud-init only looks for 'cidata'
PRIVATE_FILE_MODE = 0o600

# ISO9660 level 3 allows only A-Z, 0-9 and '_' in names, hence no '-'.
_ISO9660_NAMES: Mapping[str, str] = {
    USER_DATA: "USERDATA.;1",
    META_DATA: "METADATA.;1",
    NETWORK_CONFIG: "NETWORKCONFIG.;1",
    VENDOR_DATA: "VENDORDATA.;1",
}
_ROCK_RIDGE_FILE_MODE = 0o100400  # regular file, readable by root only (cloud-init runs as root)

_SECTOR_SIZE = 2048
_FIRST_VOLUME_DESCRIPTOR_SECTOR = 16
_MAX_VOLUME_DESCRIPTORS = 64
_PRIMARY_VOLUME_DESCRIPTOR = 1
_VOLUME_DESCRIPTOR_TERMINATOR = 255
_STANDARD_IDENTIFIER = b"CD001"
_VOLUME_IDENTIFIER = slice(40, 72)
_SEED_ISO_ACCEPTED = f"an ISO9660 image whose volume label is '{SEED_VOLUME_LABEL}' (any case)"


def write_seed_iso(seed: Seed, path: Path) -> None:
    """Write `seed` as a NoCloud ISO at `path`, atomically and with mode 0600."""
    iso = _master_seed_iso(seed.files)
    try:
        _write_private_file_atomically(path, iso.write_fp)
    except PyCdlibException as error:
        raise VirtainerError(f"cannot write seed ISO {path}: {error}") from error
    finally:
        iso.close()


def read_seed_iso(path: Path) -> dict[str, bytes]:
    """Return the files in the root of a seed ISO, by the names Linux would show."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (OSError, PyCdlibException) as error:
        raise VirtainerError(f"cannot read seed ISO {path}: {error}") from error
    try:
        return _read_root_files(iso)
    except PyCdlibException as error:
        raise VirtainerError(f"cannot read seed ISO {path}: {error}") from error
    finally:
        iso.close()


def validate_seed_iso(path: Path) -> None:
    """Check that a prebuilt seed is an ISO9660 image labelled cidata; ConfigError('seed_iso')
    otherwise. Only the volume descriptors are read: the image itself is used as is."""
    try:
        with path.open("rb") as image:
            label = _primary_volume_label(image)
    except OSError as error:
        raise ConfigError(
            "seed_iso", str(path), f"{_SEED_ISO_ACCEPTED}; cannot read it: {error.strerror}"
        ) from error
    if label is None or label.lower() != SEED_VOLUME_LABEL:
        raise ConfigError("seed_iso", str(path), f"{_SEED_ISO_ACCEPTED}, found {label!r}")


def write_secret_file(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically with mode 0600, e.g. a generated password."""
    _write_private_file_atomically(path, lambda stream: stream.write(text.encode("utf-8")))


# --- ISO mastering and reading -------------------------------------------------------------


def _master_seed_iso(files: Mapping[str, bytes]) -> pycdlib.PyCdlib:
    """Build the ISO in memory; pycdlib reads the file contents again when it is written."""
    unknown = sorted(set(files) - set(_ISO9660_NAMES))
    if unknown:
        raise VirtainerError(f"a NoCloud seed cannot hold {', '.join(unknown)}")
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=3,
        sys_ident="LINUX",
        vol_ident=SEED_VOLUME_LABEL,
        app_ident_str="VIRTAINER",
        joliet=3,
        rock_ridge="1.09",
    )
    for name in sorted(files):  # a stable directory order
        content = files[name]
        iso.add_fp(
            io.BytesIO(content),
            len(content),
            iso_path="/" + _ISO9660_NAMES[name],
            rr_name=name,
            joliet_path="/" + name,
            file_mode=_ROCK_RIDGE_FILE_MODE,
        )
    return iso


def _read_root_files(iso: pycdlib.PyCdlib) -> dict[str, bytes]:
    """Read with the richest name space present, as the Linux isofs driver would."""
    if iso.has_rock_ridge():
        name_space = "rr_path"
    elif iso.has_joliet():
        name_space = "joliet_path"
    else:
        name_space = "iso_path"
    _, _, names = next(iso.walk(**{name_space: "/"}))
    files: dict[str, bytes] = {}
    for name in names:
        content = io.BytesIO()
        iso.get_file_from_iso_fp(content, **{name_space: "/" + name})
        files[_shown_name(name, name_space)] = content.getvalue()
    return files


def _shown_name(name: str, name_space: str) -> str:
    if name_space != "iso_path":
        return name
    # Linux shows plain ISO9660 names in lower case without the ';1' version or a bare dot.
    return name.split(";", 1)[0].rstrip(".").lower()


def _primary_volume_label(image: BinaryIO) -> str | None:
    """The volume identifier of the primary volume descriptor, or None if there is none."""
    for index in range(_MAX_VOLUME_DESCRIPTORS):
        image.seek((_FIRST_VOLUME_DESCRIPTOR_SECTOR + index) * _SECTOR_SIZE)
        descriptor = image.read(_SECTOR_SIZE)
        if len(descriptor) < _SECTOR_SIZE or descriptor[1:6] != _STANDARD_IDENTIFIER:
            return None
        if descriptor[0] == _PRIMARY_VOLUME_DESCRIPTOR:
            return descriptor[_VOLUME_IDENTIFIER].decode("ascii", "replace").rstrip(" \0")
        if descriptor[0] == _VOLUME_DESCRIPTOR_TERMINATOR:
            return None
    return None


# --- private files -------------------------------------------------------------------------


def _write_private_file_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Let `write` fill a 0600 file that then replaces `path` at once (virtainer.files)."""
    try:
        write_atomic_with(path, write, mode=PRIVATE_FILE_MODE, parents=False)
    except OSError as error:
        raise VirtainerError(f"cannot write {path}: {error.strerror or error}") from error
