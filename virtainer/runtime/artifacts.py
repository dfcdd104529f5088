"""What every runtime container binds in, built once from Debian packages and cached by content hash.

CACHE/tree-<key>   the runtime tree (build-tree.sh): key over the script and the apt sources
CACHE/kernel-<key> vmlinux (guest/build-kernel.sh, minutes to compile): key over the script, the
                   kernel's config fragment and the checksums of the kernel source package
CACHE/guest-<key>  vmlinux + initrd.gz, what the launcher binds in (guest/build-guest.sh, seconds):
                   key over the script, init.c and the kernel's key, so a change to the init never
                   compiles the kernel again
A directory appears under its final name only once complete, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from virtainer.errors import VirtainerError
from virtainer.runtime.plan import FIRMWARE, INITRD, KERNEL, QEMU, VIRTIOFSD

HERE = Path(__file__).parent
TREE_SCRIPT = HERE / "build-tree.sh"
KERNEL_SCRIPT = HERE / "guest" / "build-kernel.sh"
GUEST_SCRIPT = HERE / "guest" / "build-guest.sh"
# dpkg's list of the package's files with their MD5 sums, the tarball's among them: a few bytes
# that change with the kernel source build-kernel.sh compiles
KERNEL_SOURCE_SUMS = Path("/var/lib/dpkg/info/linux-source-6.1.md5sums")
KERNEL_SOURCES = (KERNEL_SCRIPT, HERE / "guest" / "kernel.config", KERNEL_SOURCE_SUMS)
GUEST_SOURCES = (GUEST_SCRIPT, HERE / "guest" / "init.c")
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
TREE_BUILD_TIMEOUT_S = 900
KERNEL_BUILD_TIMEOUT_S = 3600  # the guest kernel compiles: 10-20 min on 2 busy cores
GUEST_BUILD_TIMEOUT_S = 300
BUILD_TIMEOUT_S = TREE_BUILD_TIMEOUT_S + KERNEL_BUILD_TIMEOUT_S + GUEST_BUILD_TIMEOUT_S  # one after another


class ArtifactError(VirtainerError):
    """The runtime tree or the guest kernel/initramfs is missing or cannot be built."""


@dataclass(frozen=True)
class Artifacts:
    tree: Path
    guest: Path

    @property
    def shared(self) -> Path:
        """Read-write cache of the containers of this tree (libvirt's QEMU probe, KVM decision)."""
        path = self.tree.with_name(self.tree.name.replace("tree-", "host-", 1))
        path.mkdir(mode=0o700, exist_ok=True)
        return path


def cache_root() -> Path:
    return Path(os.environ.get("VIRTAINER_RUNTIME_CACHE", "/var/cache/virtainer/runtime"))


def _key(files: tuple[Path, ...], *also: str) -> str:
    digest = hashlib.sha256()
    for path in files:
        if path.exists():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for text in also:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:16]


def tree_dir() -> Path:
    return cache_root() / f"tree-{_key((TREE_SCRIPT, *APT_SOURCES))}"


def kernel_dir() -> Path:
    return cache_root() / f"kernel-{_key(KERNEL_SOURCES)}"


def guest_dir() -> Path:
    return cache_root() / f"guest-{_key(GUEST_SOURCES, kernel_dir().name)}"


def is_complete(path: Path) -> bool:
    return (path / ".complete").exists()


def find() -> Artifacts:
    """The cached artifacts, or an error saying how to build them (never builds: `create` is timed)."""
    tree, guest = tree_dir(), guest_dir()
    missing = [label for label, path in (("runtime tree", tree), ("guest kernel", guest)) if not is_complete(path)]
    if missing:
        raise ArtifactError(f"the {' and '.join(missing)} are not built", hint="run: virtainer runtime install")
    if not (guest / KERNEL).is_file() or not (guest / INITRD).is_file():
        raise ArtifactError(f"{guest} lacks {KERNEL} or {INITRD}", hint="run: virtainer runtime install --rebuild")
    for binary in (QEMU, VIRTIOFSD, FIRMWARE):
        if not (tree / binary.lstrip("/")).is_file():
            hint = "run: virtainer runtime install --rebuild"
            raise ArtifactError(f"the runtime tree {tree} lacks {binary}", hint=hint)
    return Artifacts(tree, guest)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per artifact: a checkout whose artifacts are built never waits on another's
    build (the guest kernel compiles for minutes)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure(*, rebuild: bool = False, say: object = print) -> Artifacts:
    """Build whatever is missing (minutes the first time, nothing afterwards)."""
    kernel = kernel_dir()
    builds = (  # in this order: the guest's directory takes the kernel built before it
        ("runtime tree", TREE_SCRIPT, (), tree_dir(), TREE_BUILD_TIMEOUT_S),
        ("guest kernel", KERNEL_SCRIPT, (), kernel, KERNEL_BUILD_TIMEOUT_S),
        ("guest initramfs", GUEST_SCRIPT, (str(kernel / KERNEL),), guest_dir(), GUEST_BUILD_TIMEOUT_S),
    )
    for label, script, arguments, path, timeout in builds:
        if is_complete(path) and not rebuild:
            continue
        with _locked(path):
            if is_complete(path) and not rebuild:
                continue  # built meanwhile by the holder of the lock
            _build(label, [str(script), *arguments], path, timeout, say)
    return find()


def _build(label: str, command: list[str], path: Path, timeout: int, say: object) -> None:
    """`command[0] STAGING command[1:]...` builds into STAGING, which becomes `path` once complete."""
    if callable(say):
        say(f"building the {label} in {path} (once; cached by content hash)")
    staging = path.with_name(path.name + ".build")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        argv = [command[0], str(staging), *command[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ArtifactError(f"building the {label} took over {timeout} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ArtifactError(f"building the {label} failed: {last}")
    (staging / ".complete").touch()
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)
