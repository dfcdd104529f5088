"""Shipping a VM as an image, the parts without Docker: layered bases, the bake record, and what
`virtainer image build` refuses before it calls Docker (tests/container/test_ship.py runs it all)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtainer import storage
from virtainer.controller import bake
from virtainer.errors import BaseMismatchError, ConfigError, ConflictError, ImageError, NotFoundError
from virtainer.orchestration import images


def qcow2(path: Path, backing: Path | None = None) -> Path:
    args = ["create", "-q", "-f", "qcow2"]
    if backing is not None:
        args += ["-F", "qcow2", "-b", str(backing)]
    storage.qemu_img(*args, str(path), "16M")
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTAINER_CACHE_DIR", str(tmp_path / "cache"))


def test_a_base_may_be_a_layer_on_a_complete_chain(tmp_path: Path) -> None:
    base = qcow2(tmp_path / "base.qcow2")
    layer = qcow2(tmp_path / "layer.qcow2", base)
    identity = storage.base_identity(layer)
    assert identity.sha256 == storage.sha256_file(layer) and identity.format == "qcow2"


def test_a_base_on_a_missing_backing_file_is_refused(tmp_path: Path) -> None:
    base = qcow2(tmp_path / "base.qcow2")
    layer = qcow2(tmp_path / "layer.qcow2", base)
    base.unlink()
    with pytest.raises(ImageError, match=r"is an overlay on .*base\.qcow2, which is missing") as raised:
        storage.base_identity(layer)
    assert "\n" not in str(raised.value)


def test_bake_records_a_copied_disk_and_caches_its_identity(tmp_path: Path) -> None:
    disk = qcow2(tmp_path / "disk.qcow2")
    record = tmp_path / "image.json"
    baked = bake.record_image(disk, "debian12", "test", record)
    data = json.loads(record.read_text())
    assert data["path"] == str(disk) and data["os_variant"] == "debian12" and data["sha256"] == baked.sha256
    cache = json.loads(storage.identity_cache_path().read_text())
    assert [entry["sha256"] for entry in cache.values()] == [baked.sha256]


def test_bake_refuses_a_relative_or_missing_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bake.main(["--image", "disk.qcow2"]) == 1
    assert bake.main(["--image", str(tmp_path / "nothing.qcow2")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("bake: ") for line in lines)


def test_image_build_refuses_a_diff_in_use_before_calling_docker(tmp_path: Path) -> None:
    diff = qcow2(tmp_path / "local_image.qcow2")
    holder = storage.DiffLock(diff)
    holder.acquire()
    try:
        with pytest.raises(ConflictError, match="is in use by a running VM"):
            images.build(tmp_path, "never-called", "never:1", {}, engine="/nonexistent/docker")
    finally:
        holder.release()


def test_image_build_needs_a_diff_and_its_base_record(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no diff at"):
        images.build(tmp_path, "x", "y:1", {})
    qcow2(tmp_path / "local_image.qcow2")
    with pytest.raises(BaseMismatchError, match="no readable record of its base"):
        images.build(tmp_path, "x", "y:1", {}, engine="/nonexistent/docker")


@pytest.mark.parametrize("pair", ["RAM", "=1", "A B=1"])
def test_image_build_env_is_key_value(pair: str) -> None:
    with pytest.raises(ConfigError, match=r"KEY=VALUE"):
        images.parse_env([pair])


def test_the_layer_dockerfile_copies_the_diff_above_the_image_and_bakes_it() -> None:
    base = images.ImageBase("/var/lib/virtainer/images/base.img", "a" * 64, "debian12")
    text = images._dockerfile("team/vm:1", images.LAYERS_DIR / "abc.qcow2", base, "a" * 64, {"RAM": "2048"})
    lines = text.splitlines()
    assert lines[0] == "FROM team/vm:1"
    assert lines[1] == "COPY layer.qcow2 /var/lib/virtainer/images/layers/abc.qcow2"
    assert lines[2] == 'ENV RAM="2048"'
    assert "virtainer.controller.bake --image /var/lib/virtainer/images/layers/abc.qcow2" in lines[3]
