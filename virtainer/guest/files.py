"""Copy files and directories between the host and the guest: a tar stream through the agent,
modes kept, an existing destination never overwritten, and the guest's archive treated as hostile."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from virtainer.errors import ConfigError, ConflictError, NotFoundError
from virtainer.guest.agent import _agent_needed
from virtainer.guest.execute import CapturedExec, ExecRequest, OnProgress, Stream, run
from virtainer.hypervisor import Domain


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    bytes: int
    elapsed_s: float


def guest_path(value: str, setting: str = "path") -> str:
    if not value.startswith("/") or "\0" in value or "\n" in value:
        raise ConfigError(setting, value, "an absolute path in the guest, e.g. vm:/home/debian/file")
    return value.rstrip("/") or "/"


# In the guest, as the exec user: refuse to overwrite; unpack next to the target, then rename.
_UNPACK = """set -e
dest=$1 base=$2
if [ -d "$dest" ]; then dest=$dest/$base; fi
if [ -e "$dest" ] || [ -L "$dest" ]; then echo "virtainer: $dest exists" >&2; exit 17; fi
parent=$(dirname -- "$dest")
[ -d "$parent" ] || { echo "virtainer: no directory $parent" >&2; exit 2; }
t=$(mktemp -d "$parent/.virtainer-cp.XXXXXX")
trap 'rm -rf -- "$t"' EXIT
tar -x -p --no-same-owner -C "$t" -f -
mv -T -- "$t/$base" "$dest"
"""
_PACK = """set -e
[ -e "$1" ] || { echo "virtainer: no such file or directory $1" >&2; exit 2; }
if [ "$2" = size ]; then du -s -b -- "$1" | cut -f1; exit 0; fi
cd -- "$(dirname -- "$1")"
exec tar -c -f - -- "$(basename -- "$1")"
"""


def copy_in(
    dom: Domain,
    source: Path,
    dest: str,
    *,
    user: str | None = None,
    on_progress: OnProgress | None = None,
) -> CopyResult:
    """Copy a host file or directory into the guest (a tar stream through the agent, modes kept)."""
    dest = guest_path(dest, "destination")
    if not source.exists() and not source.is_symlink():
        raise NotFoundError(f"no such file or directory: {source}")
    started = time.monotonic()
    base = source.resolve().name if source.name in ("", ".", "..") else source.name
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(str(source), arcname=base)
        size = archive.tell()
        archive.seek(0)
        request = ExecRequest(("/bin/sh", "-c", _UNPACK, "sh", dest, base), user=user)
        done = _run_helper(dom, request, "cp", stdin=archive, on_upload=on_progress)
    _refuse_on_failure(done, dest)
    return CopyResult(str(source), f"{dom.name}:{dest}", size, round(time.monotonic() - started, 3))


def copy_out(
    dom: Domain,
    source: str,
    dest: Path,
    *,
    user: str | None = None,
    on_progress: OnProgress | None = None,
) -> CopyResult:
    """Copy a guest file or directory to the host; an existing destination is never overwritten."""
    source = guest_path(source, "source")
    if source == "/":
        raise ConfigError("source", source, "a file or directory below / in the guest")
    started = time.monotonic()
    sized = _run_helper(dom, ExecRequest(("/bin/sh", "-c", _PACK, "sh", source, "size"), user=user), "cp")
    _refuse_on_failure(sized, source)
    total = int(sized.stdout.strip() or 0)
    base = source.rsplit("/", 1)[-1]
    target = dest / base if dest.is_dir() else dest
    if target.exists() or target.is_symlink():
        raise ConflictError(f"{target} exists", hint="remove it or choose another destination")
    if not target.parent.is_dir():
        raise NotFoundError(f"no directory {target.parent}")
    staging = Path(tempfile.mkdtemp(prefix=".virtainer-cp.", dir=target.parent))
    try:
        with tempfile.TemporaryFile(dir=staging) as archive:
            received = 0

            def collect(stream: Stream, data: bytes) -> None:
                nonlocal received
                if stream == "stdout":
                    archive.write(data)
                    received += len(data)
                    if on_progress:
                        on_progress(min(received, total), total)
                else:
                    errors.append(data)

            errors: list[bytes] = []
            request = ExecRequest(("/bin/sh", "-c", _PACK, "sh", source, "archive"), user=user)
            with _agent_needed(dom, "cp"):
                result = run(dom, request, collect)
            _refuse_on_failure(CapturedExec(result, b"", b"".join(errors)), source)
            if on_progress:
                on_progress(total, total)
            archive.seek(0)
            _extract(archive, staging, base)
        (staging / base).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CopyResult(f"{dom.name}:{source}", str(target), received, round(time.monotonic() - started, 3))


def _run_helper(dom: Domain, request: ExecRequest, operation: str, **options: Any) -> CapturedExec:
    chunks: dict[Stream, list[bytes]] = {"stdout": [], "stderr": []}
    with _agent_needed(dom, operation):
        result = run(dom, request, lambda stream, data: chunks[stream].append(data), **options)
    return CapturedExec(result, b"".join(chunks["stdout"]), b"".join(chunks["stderr"]))


def _refuse_on_failure(done: CapturedExec, path: str) -> None:
    if done.result.exit_code == 0:
        return
    message = done.stderr.decode(errors="replace").strip().splitlines()
    text = message[-1].removeprefix("virtainer: ") if message else f"exit code {done.result.exit_code}"
    if done.result.exit_code == 17:
        raise ConflictError(text, hint="remove it or choose another destination")
    if done.result.exit_code == 2 and text.startswith("no "):
        raise NotFoundError(f"in the guest: {text}")
    raise ConflictError(f"copy of {path} failed in the guest: {text}")


def _extract(archive: IO[bytes], staging: Path, base: str) -> None:
    """Unpack what the guest sent into an empty staging directory, treating it as hostile: one
    top-level entry named `base`, each name once, nothing outside, nothing below a symlink, no
    device files, no hard links leaving the tree, no setuid/setgid bits. Modes are kept otherwise
    (Python's "tar" filter would drop group/other write bits)."""
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        members = tar.getmembers()
        names = [Path(member.name) for member in members]
        symlinks = {Path(member.name) for member in members if member.issym()}
        if len(set(names)) != len(names):
            raise ConflictError("the guest sent an archive with a name twice; nothing was copied")
        for member, path in zip(members, names, strict=True):
            if not path.parts or path.parts[0] != base or member.name.startswith("/") or ".." in path.parts:
                raise ConflictError(f"the guest sent an unexpected entry {member.name!r}; nothing was copied")
            if any(parent in symlinks for parent in path.parents):
                raise ConflictError(f"the guest sent an entry below a symlink {member.name!r}; nothing was copied")
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                raise ConflictError(f"the guest sent a special file {member.name!r}; nothing was copied")
            link = Path(member.linkname)
            if member.islnk() and (link.parts[:1] != (base,) or ".." in link.parts or link in symlinks):
                raise ConflictError(f"the guest sent a hard link leaving the tree {member.name!r}")
            member.mode &= 0o1777
            member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        if hasattr(tarfile, "fully_trusted_filter"):
            tar.extractall(staging, members=members, filter="fully_trusted")  # checked above
        else:  # Python without extraction filters (Debian 12's 3.11.2, in the container)
            tar.extractall(staging, members=members)
