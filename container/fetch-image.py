"""Build step of container/Dockerfile: put the variant's guest image at <dir>/base.img, verified.

Standard library only (it runs before the virtainer package is copied, so that a code change does
not copy a several-hundred-MiB image layer again). Sources, in order:
- <dir>/base.img already there (a file from the build context, COPY guest/): verified against
  --sha256/--sha512 when given;
- --url: downloaded, verified, renamed into place only when the checksum matches;
- neither: the generic variant, no baked image (IMAGE or IMAGE_URL at run time).
Writes <dir>/image.json (variant, os_variant, source, checksum) for the controller's defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import urllib.request
from pathlib import Path

CHUNK = 4 * 1024 * 1024


def fail(message: str) -> None:
    sys.stderr.write(f"fetch-image: {message}\n")
    sys.exit(1)


def digests(path: Path) -> dict[str, str]:
    sha256, sha512 = hashlib.sha256(), hashlib.sha512()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            sha256.update(chunk)
            sha512.update(chunk)
    return {"sha256": sha256.hexdigest(), "sha512": sha512.hexdigest()}


def verify(path: Path, expected: dict[str, str], source: str) -> dict[str, str]:
    got = digests(path)
    for kind, want in expected.items():
        if want and got[kind] != want.lower():
            path.unlink()
            fail(f"{source}: {kind} is {got[kind]}, expected {want}; refused")
    return got


def download(url: str, target: Path) -> None:
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as stream:
            while chunk := response.read(CHUNK):
                stream.write(chunk)
    except OSError as error:
        partial.unlink(missing_ok=True)
        fail(f"download of {url} failed: {error}")
    os.replace(partial, target)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("dir", "variant", "os-variant", "url", "sha256", "sha512"):
        parser.add_argument(f"--{name}", default="")
    args = parser.parse_args()
    directory = Path(args.dir)
    image = directory / "base.img"
    expected = {"sha256": args.sha256, "sha512": args.sha512}
    if image.exists():
        source = "build context file"
    elif args.url:
        if not (args.sha256 or args.sha512):
            fail(f"{args.url}: no checksum given (IMAGE_SHA256 or IMAGE_SHA512)")
        download(args.url, image)
        source = args.url
    else:
        if args.variant != "generic":
            fail(f"variant {args.variant} needs an image (IMAGE_URL + checksum, or a context file)")
        return
    got = verify(image, expected, source)
    if image.stat().st_mode & 0o777 != 0o444:  # the base is never written; an unneeded chmod
        image.chmod(0o444)  # would copy a context file into this layer a second time
    record = {
        "variant": args.variant,
        "os_variant": args.os_variant,
        "source": source,
        "sha256": got["sha256"],
        "path": str(image),
    }
    (directory / "image.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"fetch-image: {image} from {source}, sha256 {got['sha256']}")


if __name__ == "__main__":
    main()
