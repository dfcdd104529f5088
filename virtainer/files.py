"""Writing files so that a crash never leaves half of one, and never replaces what it must not.

Every file virtainer writes beside a diff or in a state directory goes through here: it is made
under a unique temporary name in the same directory, flushed to disk, then renamed over its final
name (or, with `replace=False`, linked to it: that fails when the name exists, so a file someone
else made meanwhile is never clobbered), and the directory is flushed so the rename itself
survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from virtainer import faults

TEMP_TOKEN_BYTES = 6


def write_atomic(
    path: Path, content: str | bytes, *, mode: int = 0o644, replace: bool = True, parents: bool = True
) -> None:
    """Write `content` (text as UTF-8) to `path` at once, with exactly `mode`."""
    data = content.encode() if isinstance(content, str) else content
    write_atomic_with(path, lambda stream: stream.write(data), mode=mode, replace=replace, parents=parents)


def write_atomic_with(
    path: Path,
    write: Callable[[BinaryIO], object],
    *,
    mode: int = 0o644,
    replace: bool = True,
    parents: bool = True,
) -> None:
    """Let `write` fill a new private file, then publish it as `path` (see `staged`)."""
    with staged(path, replace=replace, parents=parents) as temp:
        # O_EXCL: never follow or reuse something already at the temporary name
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            os.fchmod(stream.fileno(), mode)  # exact mode whatever the umask


@contextlib.contextmanager
def staged(path: Path, *, replace: bool = True, parents: bool = True) -> Iterator[Path]:
    """Yield a unique, not yet existing temporary path beside `path` for the caller (or a tool
    such as qemu-img) to create; on success it is synced and becomes `path`, on any failure it is
    removed and `path` is left as it was. With replace=False an existing `path` is never replaced:
    FileExistsError is raised instead. parents=False: a missing directory is an error."""
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.tmp")
    try:
        yield temp
        fsync_file(temp)
        faults.crash_point(f"before-rename:{path.name}")
        if replace:
            os.replace(temp, path)
        else:
            _publish_without_replacing(temp, path)
        fsync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def remove_stale_temporaries(paths: Iterable[Path]) -> list[Path]:
    """Remove what a killed writer left under `staged`'s temporary names for these files.

    Only for files no one else writes meanwhile: those beside a diff while its lock is held."""
    removed: list[Path] = []
    for path in paths:
        pattern = re.compile(rf"^\.{re.escape(path.name)}\.[0-9a-f]{{{2 * TEMP_TOKEN_BYTES}}}\.tmp$")
        with contextlib.suppress(OSError):
            for candidate in path.parent.iterdir():
                if pattern.match(candidate.name):
                    candidate.unlink(missing_ok=True)
                    removed.append(candidate)
    return removed


def _publish_without_replacing(temp: Path, path: Path) -> None:
    try:
        os.link(temp, path)  # atomic, and fails when the name exists
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (some FUSE mounts): the diff lock keeps
        if path.exists():  # out the only other writer, so check-then-rename is enough there
            raise FileExistsError(17, "File exists", str(path)) from None
        os.replace(temp, path)
        return
    os.unlink(temp)


def fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(directory: Path) -> None:
    """Make a rename durable. Some file systems cannot fsync a directory; the file itself is
    complete either way, so that is not an error."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
