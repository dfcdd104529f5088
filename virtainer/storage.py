"""Base images and the VM's qcow2 diff.

The base image is only ever read. The VM writes to a qcow2 overlay (the diff) whose backing file is
the base. Beside the diff we record the base's identity (sha256, virtual size, format), so a diff
copied to a teammate or a new container is only ever reattached to the very same base.

Without a base image, an existing disk at the diff's path is the whole system disk (SupraVM's
sys.qcow2): used as it is, never recreated. The VM's UEFI variables live beside the diff too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from virtainer.diff_files import DiffFiles
from virtainer.disk_layout import PartitionTable, read_partition_table
from virtainer.errors import BaseMismatchError, ConfigError, ConflictError, ImageError, NotFoundError
from virtainer.faults import crash_point
from virtainer.files import staged, write_atomic, write_atomic_with
from virtainer.nic import save_mac as save_mac  # the MAC's home is nic.py; kept for callers of storage
from virtainer.nic import saved_mac as saved_mac
from virtainer.spec import ImageSource, VmSpec

ProgressFn = Callable[[int, int | None], None]  # (bytes done, bytes total or None)

HASH_CHUNK = 4 * 1024 * 1024
QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class BaseIdentity:
    sha256: str
    virtual_size: int
    format: str

    def describe(self) -> str:
        return f"sha256 {self.sha256[:16]}…, {self.format}, {self.virtual_size} bytes virtual"


@dataclass(frozen=True)
class BaseRecord:
    """What is written beside the diff: the identity plus where the base was last found."""

    identity: BaseIdentity
    path: str

    def to_json(self) -> str:
        return json.dumps({"base": asdict(self.identity), "base_path": self.path}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BaseRecord:
        data = json.loads(text)
        return cls(identity=BaseIdentity(**data["base"]), path=data.get("base_path", ""))


# ---------------------------------------------------------------------------------------------
# qemu-img


def qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageError("qemu-img is not installed", hint="apt-get install qemu-utils") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ImageError(f"qemu-img {args[0]} failed: {detail[-1] if detail else 'no output'}")
    return done.stdout


def image_info(path: Path, disk_format: str | None = None) -> dict[str, object]:
    """qemu-img info; with disk_format the image is read as that format, never probed."""
    forced = ("-f", disk_format) if disk_format else ()
    # -U: read even while a running QEMU holds the image lock
    info = json.loads(qemu_img("info", "-U", *forced, "--output=json", str(path)))
    assert isinstance(info, dict)
    return info


# ---------------------------------------------------------------------------------------------
# Base image identity (sha256 cached by path, size, mtime and inode: hashing GBs costs seconds)


def sha256_file(path: Path, progress: ProgressFn | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def identity_cache_path() -> Path:
    root = Path(os.environ.get("VIRTAINER_CACHE_DIR", "/var/cache/virtainer"))
    return root / "identities.json"


def base_identity(path: Path, progress: ProgressFn | None = None) -> BaseIdentity:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    cache = _read_json(identity_cache_path())
    if key in cache:
        return BaseIdentity(**cache[key])
    info = image_info(path)
    _require_complete_chain(path, info)
    identity = BaseIdentity(
        sha256=sha256_file(path, progress),
        virtual_size=int(info["virtual-size"]),  # type: ignore[call-overload]
        format=str(info["format"]),
    )
    cache[key] = asdict(identity)
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        write_atomic(identity_cache_path(), json.dumps(cache, indent=1), mode=0o644)
    return identity


def base_partition_table(base: Path, identity: BaseIdentity) -> PartitionTable | None:
    """The base's partition table (None: unreadable), cached by the base's sha256."""
    cache_path = identity_cache_path().with_name("partition-tables.json")
    cache = _read_json(cache_path)
    if identity.sha256 in cache:
        entry = cache[identity.sha256]
        return PartitionTable(entry["gpt"], tuple((first, end) for first, end in entry["extents"])) if entry else None
    table = read_partition_table(base, identity.format)
    cache[identity.sha256] = {"gpt": table.gpt, "extents": table.extents} if table else {}
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        write_atomic(cache_path, json.dumps(cache, indent=1), mode=0o644)
    return table


def qcow2_virtual_size(path: Path) -> int | None:
    """The virtual size in a qcow2 header (no qemu-img process); None if `path` is no qcow2."""
    try:
        with path.open("rb") as stream:
            header = stream.read(32)
    except OSError:
        return None
    if len(header) < 32 or header[:4] != QCOW2_MAGIC:
        return None
    return int.from_bytes(header[24:32], "big")


def _require_complete_chain(path: Path, info: dict[str, object]) -> None:
    """A base may itself be an overlay: a baked VM image's layer on the image's original base
    (`virtainer image build`). Its backing chain must be complete, and is only ever read."""
    seen = {path.resolve()}
    while info.get("backing-filename"):
        backing = Path(str(info.get("full-backing-filename") or info["backing-filename"]))
        if not backing.is_absolute() or not backing.is_file():
            raise ImageError(f"base image {path} is an overlay on {backing}, which is missing (use a standalone image)")
        if backing.resolve() in seen:
            raise ImageError(f"base image {path} has a backing chain that loops through {backing}")
        seen.add(backing.resolve())
        info = image_info(backing)


def _read_json(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------------
# Fetching a base image


def image_cache_dir() -> Path:
    return Path(os.environ.get("VIRTAINER_CACHE_DIR", "/var/cache/virtainer")) / "images"


def require_image(source: ImageSource) -> None:
    if not source.path and not source.url:
        raise ConfigError("image", "", "a base image: set VIRTAINER_IMAGE (path) or VIRTAINER_IMAGE_URL (+ _SHA256)")


def has_base_image(spec: VmSpec) -> bool:
    return bool(spec.image.path or spec.image.url)


def require_system_disk(spec: VmSpec) -> None:
    """A base image to make the diff on, or an existing disk at the diff's path used as it is."""
    if has_base_image(spec) or spec.diff_path.exists():
        return
    if spec.storage_dir is not None:
        raise ConfigError(
            "storage_id", spec.storage_dir.name,
            f"a directory holding sys.qcow2 ({spec.diff_path} does not exist), or set image to create it",
        )  # fmt: skip
    require_image(spec.image)


def fetch_base_image(source: ImageSource, progress: ProgressFn | None = None) -> Path:
    """Return a local path of the base image, downloading (and verifying) a URL once."""
    require_image(source)
    if source.path:
        if source.sha256 and sha256_file(source.path, progress) != source.sha256:
            raise ImageError(f"base image {source.path} does not match image_sha256 {source.sha256}")
        return source.path
    assert source.url is not None
    key = source.sha256 or "url-" + hashlib.sha256(source.url.encode()).hexdigest()
    cached = image_cache_dir() / key / Path(source.url.split("?")[0]).name
    if cached.is_file():
        return cached
    _download(source.url, cached, source.sha256, progress)
    return cached


def _download(url: str, target: Path, sha256: str | None, progress: ProgressFn | None) -> None:
    import httpx  # imported here: only downloads need it

    digest = hashlib.sha256()

    def fetch(stream: BinaryIO) -> None:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60) as response:
            if response.status_code != 200:
                raise ImageError(f"download of {url} failed: HTTP {response.status_code}")
            total = int(response.headers.get("content-length", 0)) or None
            done = 0
            for chunk in response.iter_bytes(HASH_CHUNK):
                stream.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        got = digest.hexdigest()
        if sha256 and got != sha256:
            raise ImageError(f"download of {url} refused: sha256 is {got}, expected {sha256}")

    try:
        write_atomic_with(target, fetch, mode=0o644)
    except httpx.HTTPError as error:
        raise ImageError(f"download of {url} failed: {error}") from None


# ---------------------------------------------------------------------------------------------
# A standalone system disk: no base image (SupraVM's sys.qcow2, a converted VMDK, ...)


def standalone_disk_format(spec: VmSpec) -> str:
    """Check a system disk used without a base image and return its format. Reads, never writes.

    Such a disk is the whole system: it has no base to record, and it is never reformatted or
    recreated. An overlay is refused: its base could change under it unnoticed. Its format is
    recorded on first use (record_disk_formats) and never probed again: the guest writes it.
    """
    recorded = read_disk_formats(spec).get(_format_key(spec.diff_path))
    if recorded == "raw":
        return "raw"
    info = image_info(spec.diff_path, recorded)
    backing = info.get("backing-filename")
    if backing:
        raise BaseMismatchError(
            f"{spec.diff_path} is an overlay on {backing}; virtainer checks an overlay's base, so name it",
            hint="set image to that base image (its identity is then recorded beside the diff)",
        )
    _refuse_other_files(spec.diff_path, info, "diff" if spec.storage_dir is None else "storage_id")
    return str(info["format"])


def is_standalone_disk(path: Path) -> bool:
    """An existing disk with no backing file: complete in itself, whatever base image is configured."""
    return path.exists() and not image_info(path).get("backing-filename")


def prepare_standalone_disk(spec: VmSpec, disk_format: str) -> None:
    """A standalone disk is used as it is; only grown when disk_size asks for more."""
    if spec.disk_size_mib:
        grow_diff(spec.diff_path, spec.disk_size_mib, disk_format)


# ---------------------------------------------------------------------------------------------
# Disk formats: recorded when virtainer creates or first attaches a disk, then never probed again.
# A guest may write anything into a raw disk, a qcow2 header naming a host file as its backing
# file included; probed at the next start, that header would hand the guest the host file.


def read_disk_formats(spec: VmSpec) -> dict[str, str]:
    """The recorded formats beside the diff, by the disk's resolved path."""
    try:
        data = json.loads(spec.format_record_path.read_text())
        formats = data["formats"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ImageError(f"cannot read {spec.format_record_path}: {error}") from None
    if not isinstance(formats, dict):
        raise ImageError(f"cannot read {spec.format_record_path}: 'formats' is not a mapping")
    return {str(path): str(value) for path, value in formats.items()}


def record_disk_formats(spec: VmSpec, formats: dict[Path, str]) -> bool:
    """Record the formats of disks not recorded yet (atomically). True when written."""
    recorded = read_disk_formats(spec)
    wanted = {**{_format_key(path): value for path, value in formats.items()}, **recorded}
    if wanted == recorded:
        return False
    write_atomic(spec.format_record_path, json.dumps({"formats": wanted}, indent=2) + "\n", mode=0o644)
    return True


def data_disk_formats(spec: VmSpec) -> dict[Path, str]:
    """Each data disk's format: as recorded; else probed once (first attach); qcow2 when virtainer
    creates it. A disk whose header names a backing or data file is refused."""
    recorded = read_disk_formats(spec)
    formats: dict[Path, str] = {}
    for disk in spec.data_disks:
        if disk.path.exists():
            formats[disk.path] = checked_disk_format(disk.path, recorded.get(_format_key(disk.path)), "disks")
        elif disk.size_mib is None:
            raise NotFoundError(
                f"data disk {disk.path} does not exist and has no size to create it with",
                hint="give a size (PATH,SIZE) or an existing image",
            )
        else:
            formats[disk.path] = "qcow2"
    return formats


def checked_disk_format(path: Path, recorded: str | None, setting: str) -> str:
    """The disk's format (the recorded one, else probed), after refusing a header that names
    another file: virtainer declares no backing chain but the diff's own base."""
    if recorded == "raw":
        return "raw"  # never read as anything else, whatever the guest wrote into it
    info = image_info(path, recorded)
    _refuse_other_files(path, info, setting)
    return str(info["format"])


def _refuse_other_files(path: Path, info: dict[str, object], setting: str) -> None:
    other = info.get("backing-filename") or _data_file(info)
    if other:
        raise ConfigError(
            setting, str(path),
            f"a disk whose header names no other file; it names {other}, which virtainer did not create "
            "(check the disk; its format is recorded in the diff's .formats.json)",
        )  # fmt: skip


def _data_file(info: dict[str, object]) -> str | None:
    """qcow2's external data file (format-specific data), another way to name a host file."""
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    value = data.get("data-file") if isinstance(data, dict) else None
    return str(value) if value else None


def _format_key(path: Path) -> str:
    return os.path.realpath(path)


# ---------------------------------------------------------------------------------------------
# UEFI variables: beside the diff, made once from OVMF's template, then only ever written by the VM


def prepare_nvram(spec: VmSpec) -> bool:
    """Create the VM's NVRAM from the firmware's template unless it exists. True when created."""
    if spec.uefi is None or spec.nvram_path.exists():
        return False
    try:
        with staged(spec.nvram_path, replace=False) as temp:
            shutil.copyfile(spec.uefi.vars_template, temp)
            os.chmod(temp, 0o644)
    except FileExistsError:
        return False  # made meanwhile by another start: it is the VM's, keep it
    except OSError as error:
        raise ImageError(f"cannot create UEFI NVRAM {spec.nvram_path}: {error.strerror}") from None
    return True


# ---------------------------------------------------------------------------------------------
# The diff


def read_base_record(spec: VmSpec) -> BaseRecord | None:
    try:
        return BaseRecord.from_json(spec.base_record_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ImageError(f"cannot read {spec.base_record_path}: {error}") from None


def check_diff_matches_base(spec: VmSpec, identity: BaseIdentity) -> bool:
    """True when a diff exists and fits this base; False when there is none yet. Raises on mismatch."""
    if not spec.diff_path.exists():
        return False
    record = read_base_record(spec)
    if record is None:
        raise BaseMismatchError(
            f"diff {spec.diff_path} has no record of its base image "
            f"({spec.base_record_path.name} is missing); refusing to guess",
            hint="move the diff aside, or restore its .base.json file",
        )
    if record.identity != identity:
        raise BaseMismatchError(
            f"diff {spec.diff_path} was made on base {record.identity.describe()} "
            f"but the base offered now is {identity.describe()}; the diff is left untouched",
            hint="start with the base image the diff was made on, or use another diff path",
        )
    return True


def prepare_diff(spec: VmSpec, base: Path, identity: BaseIdentity) -> bool:
    """Create the diff, or reuse it when it was made on this base. Returns True when reused.

    The base record is written before the diff appears: a crash in between leaves a record and
    no diff, which the next start simply completes (a diff without its record is refused).
    """
    reused = check_diff_matches_base(spec, identity)
    if reused:
        _point_diff_at(spec.diff_path, base, identity)
    else:
        record = BaseRecord(identity=identity, path=str(base))
        write_atomic(spec.base_record_path, record.to_json(), mode=0o644)
        crash_point("base-recorded")
        _create_overlay(spec.diff_path, base, identity)
        crash_point("diff-created")
    if spec.disk_size_mib:
        grow_diff(spec.diff_path, spec.disk_size_mib)
    return reused


def _create_overlay(diff: Path, base: Path, identity: BaseIdentity) -> None:
    # Built under a temporary name (an interrupted create must not look like a user's diff) and
    # published without replacing: a diff another start made meanwhile is never clobbered.
    try:
        with staged(diff, replace=False) as temp:
            qemu_img("create", "-q", "-f", "qcow2", "-F", identity.format, "-b", str(base.resolve()), str(temp))
    except FileExistsError:
        raise ConflictError(f"diff {diff} was created by another start meanwhile; it is left as it is") from None


def _point_diff_at(diff: Path, base: Path, identity: BaseIdentity) -> None:
    """A shared diff may name the base by another machine's path: repoint the header only.

    Safe because the record proved the content is identical (`rebase -u` rewrites no data).
    """
    info = image_info(diff)
    if info.get("backing-filename") != str(base.resolve()):
        qemu_img("rebase", "-u", "-f", "qcow2", "-F", identity.format, "-b", str(base.resolve()), str(diff))


def check_disk_size(spec: VmSpec, identity: BaseIdentity | None) -> None:
    """Refuse a disk_size below the disk's current size before anything is written."""
    if not spec.disk_size_mib:
        return
    if spec.diff_path.exists():
        current = int(image_info(spec.diff_path)["virtual-size"])  # type: ignore[call-overload]
    elif identity is not None:
        current = identity.virtual_size  # a new overlay starts at its base's size
    else:
        return
    _refuse_shrinking(spec.disk_size_mib, current)


def _refuse_shrinking(size_mib: int, current: int) -> None:
    if size_mib * 1024 * 1024 < current:
        raise ConfigError(
            "disk_size", f"{size_mib}M", f"at least the disk's current size ({current // 2**20}M); disks never shrink"
        )


def grow_diff(diff: Path, size_mib: int, disk_format: str = "qcow2") -> None:
    current = int(image_info(diff)["virtual-size"])  # type: ignore[call-overload]
    wanted = size_mib * 1024 * 1024
    _refuse_shrinking(size_mib, current)
    if wanted > current:
        qemu_img("resize", "-q", "-f", disk_format, str(diff), str(wanted))


def create_data_disk(path: Path, size_mib: int) -> bool:
    """Create an empty qcow2 data disk unless one exists. Returns True when created."""
    if path.exists():
        return False
    try:
        with staged(path, replace=False) as temp:
            qemu_img("create", "-q", "-f", "qcow2", str(temp), f"{size_mib}M")
    except FileExistsError:
        return False  # made meanwhile: it is the user's now, keep it
    return True


# ---------------------------------------------------------------------------------------------
# One user of a diff at a time


class DiffLock:
    """An exclusive flock on `<diff>.lock`, held while a controller owns the diff.

    flock works across containers that share a volume on one host (same kernel). QEMU also locks
    the image itself; this lock lets us refuse before anything is changed, with a clear message.
    """

    def __init__(self, diff: Path) -> None:
        self.path = DiffFiles(diff).lock
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConflictError(
                f"diff {self.path.with_suffix('')} is in use by {holder}; refusing to start a second VM on it",
                hint="stop the other container first, or copy the diff for a second VM",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


# ---------------------------------------------------------------------------------------------
# Where `up` will write: checked before anything is written


def check_writable(spec: VmSpec) -> None:
    """Every place `up` writes must be writable: a read-only volume or an unwritable state
    directory is one line naming its setting (exit 2), before the first byte is written."""
    diff_key = _diff_setting(spec)
    places: list[tuple[str, Path, bool]] = [  # (setting, path, must exist as a writable file)
        ("state_dir", spec.state_dir, False),
        (diff_key, spec.diff_path.parent, False),  # the diff's lock, records and NVRAM sit beside it
    ]
    if spec.diff_path.exists():
        places.append((diff_key, spec.diff_path, True))  # QEMU writes into it
    for disk in spec.data_disks:
        places.append(("disks", disk.path, True) if disk.path.exists() else ("disks", disk.path.parent, False))
    if spec.seed_iso is None:
        places.append(("seed_path" if spec.seed_path else "state_dir", spec.generated_seed_path.parent, False))
    for key, path, existing in places:
        if problem := _unwritable(path, existing=existing):
            raise ConfigError(key, str(path), f"a writable {'file' if existing else 'directory'} ({problem})")


def _diff_setting(spec: VmSpec) -> str:
    """The setting that placed the diff (the controller renames it to what the user wrote)."""
    if spec.storage_dir is not None:
        return "storage_id"
    if spec.diff_path == spec.state_dir / "diff.qcow2":
        return "state_dir"
    return "image_dir" if spec.diff_path.name == "local_image.qcow2" else "diff"


def _unwritable(path: Path, *, existing: bool) -> str | None:
    """Why `path` cannot be written (a directory: created if missing, files made in it), or None."""
    probe = path
    if not existing:
        while not probe.exists():  # the nearest existing ancestor is where mkdir -p starts
            if probe.parent == probe:
                return "no existing parent directory"
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is not a directory"
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError as error:
        return f"{probe}: {error.strerror}"
    if read_only:
        return f"{probe} is on a read-only file system"
    if not os.access(probe, os.W_OK if existing else os.W_OK | os.X_OK):
        return f"{probe}: permission denied"
    return None
