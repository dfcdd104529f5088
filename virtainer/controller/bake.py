"""Image build step: record the baked guest image's identity in virtainer's identity cache.

Hashing a cloud image costs seconds; done once at build time, every container start finds the
identity (sha256, format, virtual size) in the cache instead (`storage.base_identity`).

    python3 -m virtainer.controller.bake                       # the image's own baked guest image
    python3 -m virtainer.controller.bake --image PATH [--os-variant debian12] [--source TEXT]
        # a disk a Dockerfile COPYed in (FROM virtainer/generic, or a VM layer of
        # `virtainer image build`): it becomes the image's guest base, then its identity is cached
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from virtainer import storage
from virtainer.controller.config import BAKED_RECORD, BakedImage
from virtainer.errors import VirtainerError
from virtainer.files import write_atomic


def record_image(path: Path, os_variant: str, source: str, record: Path = BAKED_RECORD) -> BakedImage:
    """Make `path` the image's guest base: hash it (cached) and write the baked record."""
    if not path.is_absolute() or not path.is_file():
        raise VirtainerError(f"bake: {path} is not a file (give the absolute path the Dockerfile copied it to)")
    identity = storage.base_identity(path)
    previous = BakedImage.load(record)
    baked = BakedImage(path, os_variant or (previous.os_variant if previous else ""), identity.sha256, source)
    data = {"variant": "custom", "os_variant": baked.os_variant, "source": source, "sha256": baked.sha256}
    write_atomic(record, json.dumps({**data, "path": str(path)}, indent=2) + "\n", mode=0o644)
    return baked


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bake", description="record and hash the image's guest base")
    parser.add_argument("--image", type=Path, help="a disk (qcow2 or raw) to make the image's guest base")
    parser.add_argument("--os-variant", default="", help="the guest OS (default: the image's, if any)")
    parser.add_argument("--source", default="", help="where the disk came from (kept in the record)")
    args = parser.parse_args(argv)
    try:
        if args.image is not None:
            baked = record_image(args.image, args.os_variant, args.source or f"{args.image} (docker build)")
            print(f"bake: {baked.path} is the guest base: {storage.base_identity(baked.path).describe()}")
            return 0
        found = BakedImage.load()
        if found is None:
            print("bake: no baked guest image (generic variant)")
            return 0
        identity = storage.base_identity(found.path)
    except VirtainerError as error:
        sys.stderr.write(f"bake: {error}\n")
        return 1
    if found.sha256 and identity.sha256 != found.sha256:
        sys.stderr.write(f"bake: {found.path} changed since it was fetched\n")
        return 1
    print(f"bake: {found.path}: {identity.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
