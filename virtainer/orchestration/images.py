"""`virtainer image build`: a VM's diff becomes an image whose guest base is that VM's state.

The qcow2 chain mirrors the image's layers: the original base stays in the image it came from
(a shared lower layer that a registry already has), the diff is copied into one new layer above
it as `/var/lib/virtainer/images/layers/<sha>.qcow2`, backed by that base, and baked (hashed at
build time) as the new image's guest base. A container of the new image puts a fresh diff on top;
pushing the image sends only the new layer, about the size of the diff.

Refused, with nothing built: a diff that a running VM holds (its lock), a diff without its base
record, and a diff whose base is not the one the image carries.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from virtainer import storage
from virtainer.controller.config import BAKED_RECORD, IMAGES_DIR
from virtainer.diff_files import DiffFiles
from virtainer.errors import BaseMismatchError, ConfigError, ConflictError, NotFoundError, VirtainerError

LAYERS_DIR = PurePosixPath(str(IMAGES_DIR)) / "layers"
DIFF_NAME = "local_image.qcow2"


@dataclass(frozen=True)
class ImageBase:
    """The guest base an image carries (its baked record)."""

    path: str
    sha256: str
    os_variant: str


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    layer: str  # the diff's path inside the image
    layer_bytes: int  # the diff's size on disk, i.e. what the new layer carries


def diff_file(path: Path) -> Path:
    """A diff, or the directory (volume) holding local_image.qcow2."""
    diff = path / DIFF_NAME if path.is_dir() else path
    if not diff.is_file():
        raise NotFoundError(f"no diff at {diff}", hint=f"give the diff or the directory holding {DIFF_NAME}")
    return diff


def image_base(image: str, engine: str = "docker") -> ImageBase:
    not_baked = ConfigError("--from", image, "a virtainer image with a baked guest base (its image.json)")
    try:
        done = _engine(engine, "run", "--rm", "--network", "none", "--entrypoint", "cat", image, str(BAKED_RECORD))
    except VirtainerError as error:
        if "No such file" in str(error):  # a generic image: no guest base of its own
            raise not_baked from None
        raise
    try:
        record = json.loads(done)
        return ImageBase(str(record["path"]), str(record["sha256"]), str(record.get("os_variant", "")))
    except (ValueError, KeyError, TypeError):
        raise not_baked from None


def build(diff: Path, source_image: str, tag: str, env: Mapping[str, str], engine: str = "docker") -> BuiltImage:
    diff = diff_file(diff)
    lock = storage.DiffLock(diff)
    try:
        lock.acquire()
    except ConflictError:
        raise ConflictError(
            f"diff {diff} is in use by a running VM; an image of it would catch it mid-write",
            hint="stop the VM (docker stop) first",
        ) from None
    try:
        return _build_locked(diff, source_image, tag, env, engine)
    finally:
        lock.release()


def _build_locked(diff: Path, source_image: str, tag: str, env: Mapping[str, str], engine: str) -> BuiltImage:
    record_path = DiffFiles(diff).base_record
    try:
        recorded = storage.BaseRecord.from_json(record_path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        raise BaseMismatchError(
            f"diff {diff} has no readable record of its base ({record_path.name}); refusing to guess"
        ) from None
    base = image_base(source_image, engine)
    if recorded.identity.sha256 != base.sha256:
        raise BaseMismatchError(
            f"diff {diff} was made on base sha256 {recorded.identity.sha256[:16]}, but {source_image} "
            f"carries {base.sha256[:16]}; nothing was built",
            hint="give --from the image the VM ran on",
        )
    layer = LAYERS_DIR / f"{_sha256(diff)[:16]}.qcow2"
    with tempfile.TemporaryDirectory(prefix="virtainer-image-") as scratch:
        context = Path(scratch)
        staged = context / "layer.qcow2"
        # sparse copy, then name the image's base as the backing file (the content is the same:
        # the record proved it), so the chain resolves inside the image
        subprocess.run(["cp", "--sparse=always", str(diff), str(staged)], check=True, capture_output=True)
        storage.qemu_img(
            "rebase", "-u", "-f", "qcow2", "-F", recorded.identity.format, "-b", base.path, str(staged)
        )  # fmt: skip
        (context / "Dockerfile").write_text(_dockerfile(source_image, layer, base, recorded.identity.sha256, env))
        _engine(engine, "build", "-q", "-t", tag, str(context), timeout_s=1800)
        return BuiltImage(tag, str(layer), staged.stat().st_blocks * 512)


def _dockerfile(source_image: str, layer: PurePosixPath, base: ImageBase, parent: str, env: Mapping[str, str]) -> str:
    lines = [
        f"FROM {source_image}",
        f"COPY layer.qcow2 {layer}",
        *(f"ENV {key}={json.dumps(value)}" for key, value in env.items()),
        f"RUN python3 -m virtainer.controller.bake --image {layer} --os-variant {json.dumps(base.os_variant)} "
        f"--source {json.dumps(f'VM diff on base {parent[:16]}')}",
        f"LABEL dev.virtainer.parent-base-sha256={parent}",
    ]
    return "\n".join(lines) + "\n"


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError("--env", pair, "KEY=VALUE (a setting of the container, e.g. RAM=2048)")
        env[key] = value
    return env


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _engine(engine: str, *args: str, timeout_s: float = 300) -> str:
    if shutil.which(engine) is None:
        raise VirtainerError(f"virtainer image needs the {engine} command")
    done = subprocess.run([engine, *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise VirtainerError(f"{engine} {args[0]} failed: {detail}")
    return done.stdout
