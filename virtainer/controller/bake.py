"""Image build step: record the baked guest image's identity in virtainer's identity cache.

Hashing a cloud image costs seconds; done once at build time, every container start finds the
identity (sha256, format, virtual size) in the cache instead (`storage.base_identity`).
"""

from __future__ import annotations

import sys

from virtainer import storage
from virtainer.controller.config import BakedImage


def main() -> int:
    baked = BakedImage.load()
    if baked is None:
        print("bake: no baked guest image (generic variant)")
        return 0
    identity = storage.base_identity(baked.path)
    if baked.sha256 and identity.sha256 != baked.sha256:
        sys.stderr.write(f"bake: {baked.path} changed since it was fetched\n")
        return 1
    print(f"bake: {baked.path}: {identity.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
