"""virtainer's own test guests, built on first use and cached by content hash.

Two guests (see README.md in this folder):

* :func:`cloud_guest` - a real Debian 12 cloud image (``build-cloud-image.sh``, ~1 min to build):
  cloud-init NoCloud, openssh-server, qemu-guest-agent, GRUB/BIOS boot, default user ``debian``.
* :func:`tiny_guest` - Debian cloud kernel + busybox initramfs (``build-tiny-guest.sh`` and
  ``tiny-rootfs/``, a few seconds to build, ~2 s to boot under TCG), for lifecycle tests.

Cache: ``cache_root()/<kind>-<key16>/`` where the key is a sha256 over :data:`BUILD_VERSION`, the
build script and every file of its inputs. A build runs in a temporary sibling directory that is
renamed into place only when complete, under an ``fcntl`` lock so that concurrent test processes
build once. Outputs are world-readable and read-only (dirs 755, files 444) for libvirt's qemu.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILD_VERSION",
    "DEFAULT_USER",
    "TINY_CMDLINE",
    "CloudGuest",
    "GuestBuildError",
    "TinyGuest",
    "cache_root",
    "cloud_guest",
    "tiny_guest",
]

#: Bump to invalidate every cached guest (e.g. to pick up newer Debian packages).
BUILD_VERSION = "1"
#: The cloud image's default cloud-init user (pinned in build-cloud-image.sh).
DEFAULT_USER = "debian"
#: Kernel command line for the tiny guest (direct kernel boot); tests may append e.g. "quiet".
TINY_CMDLINE = "console=ttyS0 guestmode=serve"

_HERE = Path(__file__).resolve().parent
_CLOUD_SCRIPT = _HERE / "build-cloud-image.sh"
_TINY_SCRIPT = _HERE / "build-tiny-guest.sh"
_TINY_ROOTFS = _HERE / "tiny-rootfs"
_TINY_TOOLS = _HERE / "tiny-tools"  # sources of static helpers (udpecho.c)
_SYSTEM_CACHE = Path("/var/cache/virtainer-tests")


class GuestBuildError(RuntimeError):
    """A test-guest build script failed or did not produce its outputs."""


@dataclass(frozen=True)
class CloudGuest:
    """Debian 12 cloud image: boot a qcow2 overlay of ``base_image`` with a NoCloud seed."""

    base_image: Path
    default_user: str = DEFAULT_USER


@dataclass(frozen=True)
class TinyGuest:
    """Busybox guest: direct kernel boot of ``kernel``/``initrd`` with :data:`TINY_CMDLINE`.

    ``base_image`` is a 64 MiB qcow2 base disk for an overlay: the guest counts its boots in the
    first 16 bytes of /dev/vda and prints ``GUEST-DISK-BOOTS=<n>``.
    """

    kernel: Path
    initrd: Path
    base_image: Path


def cache_root() -> Path:
    """Where built guests are cached.

    ``$VIRTAINER_TEST_CACHE`` if set; else ``/var/cache/virtainer-tests`` when running as root
    (libvirt's qemu runs as ``libvirt-qemu`` and cannot traverse ``/root``, mode 700); else
    ``$XDG_CACHE_HOME/virtainer-tests`` (default ``~/.cache/virtainer-tests``).
    """
    env = os.environ.get("VIRTAINER_TEST_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    if os.geteuid() == 0:
        return _SYSTEM_CACHE
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base.absolute() / "virtainer-tests"


def cloud_guest(cache_dir: Path | None = None) -> CloudGuest:
    """The Debian 12 cloud image, built (about a minute, needs root) on the first call."""
    out = _cached_build("cloud", _CLOUD_SCRIPT, [], ["base.qcow2"], cache_dir)
    return CloudGuest(base_image=out / "base.qcow2", default_user=DEFAULT_USER)


def tiny_guest(cache_dir: Path | None = None) -> TinyGuest:
    """The tiny busybox guest, built (a few seconds) on the first call."""
    out = _cached_build(
        "tiny", _TINY_SCRIPT, [_TINY_ROOTFS, _TINY_TOOLS], ["vmlinuz", "initrd.gz", "disk.qcow2"], cache_dir
    )
    return TinyGuest(
        kernel=out / "vmlinuz", initrd=out / "initrd.gz", base_image=out / "disk.qcow2"
    )


# ---- internals --------------------------------------------------------------------------------


def _input_files(script: Path, inputs: Iterable[Path]) -> list[tuple[str, Path]]:
    files = [(script.name, script)]
    for top in inputs:
        for path in sorted(top.rglob("*")):
            if path.is_file() or path.is_symlink():
                files.append((f"{top.name}/{path.relative_to(top).as_posix()}", path))
    return files


def _cache_key(kind: str, script: Path, inputs: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for part in (b"virtainer-test-guest", BUILD_VERSION.encode(), kind.encode()):
        h.update(len(part).to_bytes(8, "big") + part)
    for name, path in _input_files(script, inputs):
        data = str(path.readlink()).encode() if path.is_symlink() else path.read_bytes()
        for part in (name.encode(), data):
            h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


def _complete(out: Path, outputs: Iterable[str]) -> bool:
    return out.is_dir() and all((out / name).is_file() for name in outputs)


def _make_readable(top: Path) -> None:
    """dirs 755, files 444.

    libvirt's qemu runs as another uid (libvirt-qemu) and must read the images. With
    dynamic_ownership libvirt chowns read-only backing files and kernels to that user and never
    chowns them back: without a write bit even for the owner, qemu still cannot modify them.
    """
    top.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(top):
        for d in dirnames:
            Path(dirpath, d).chmod(0o755)
        for f in filenames:
            Path(dirpath, f).chmod(0o444)


def _warn_untraversable(path: Path) -> None:
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            print(
                f"warning: {parent} is not world-traversable (o+x): libvirt's qemu user may not "
                f"reach {path}; set VIRTAINER_TEST_CACHE to a traversable directory",
                file=sys.stderr,
            )
            return


def _cached_build(
    kind: str,
    script: Path,
    inputs: list[Path],
    outputs: list[str],
    cache_dir: Path | None,
) -> Path:
    root = (cache_dir if cache_dir is not None else cache_root()).absolute()
    key16 = _cache_key(kind, script, inputs)[:16]
    final = root / f"{kind}-{key16}"
    if _complete(final, outputs):
        return final

    root.mkdir(parents=True, exist_ok=True)
    if root.stat().st_uid == os.geteuid():
        root.chmod(0o755)
    _warn_untraversable(root)
    with (root / f".{kind}-{key16}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if _complete(final, outputs):  # another process built it meanwhile
            return final
        # leftovers of interrupted builds of this key (nobody else holds the lock)
        for stale in root.glob(f".{kind}-{key16}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete (files deleted by hand?): rebuild
            shutil.rmtree(final)

        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-{key16}.tmp-", dir=root))
        try:
            _run_build(kind, script, tmp, outputs)
            _make_readable(tmp)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _run_build(kind: str, script: Path, out: Path, outputs: list[str]) -> None:
    print(f"building {kind} guest (cache miss) into {out.parent} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    log = out / "build.log"
    with log.open("wb") as fh:
        proc = subprocess.run(
            ["bash", str(script), str(out)],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        )
    elapsed = time.monotonic() - t0
    missing = [name for name in outputs if not (out / name).is_file()]
    if proc.returncode != 0 or missing:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        why = f"exit status {proc.returncode}" if proc.returncode else f"missing {missing}"
        raise GuestBuildError(f"{script.name} failed after {elapsed:.0f} s ({why}):\n{tail}")
    (out / "BUILD-INFO").write_text(
        f"kind={kind}\nversion={BUILD_VERSION}\nscript={script.name}\n"
        f"built={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\nseconds={elapsed:.1f}\n"
    )
    print(f"built {kind} guest in {elapsed:.1f} s", file=sys.stderr, flush=True)
