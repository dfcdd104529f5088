"""Base images and diffs, with the real qemu-img: identity records, reuse, refusal, downloads."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from virtainer import storage
from virtainer.errors import BaseMismatchError, ConfigError, ConflictError, ImageError
from virtainer.spec import HostFacts, ImageSource, RawValue, VmSpec, resolve_spec


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTAINER_CACHE_DIR", str(tmp_path / "cache"))


def make_base(path: Path, size: str = "64M", fill: bytes = b"base") -> Path:
    """A small qcow2 whose content (and so sha256) depends on `fill`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw")
    raw.write_bytes(fill * 1024)
    storage.qemu_img("convert", "-O", "qcow2", "-f", "raw", str(raw), str(path))
    storage.qemu_img("resize", "-q", "-f", "qcow2", str(path), size)
    return path


def spec_for(base: Path, diff: Path, **extra: object) -> VmSpec:
    raw = {"image": RawValue(str(base), "image"), "diff": RawValue(str(diff), "diff")}
    raw.update({key: RawValue(value, key) for key, value in extra.items()})
    return resolve_spec(raw, HostFacts(2, 4096))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_identity_is_sha256_size_and_format(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base.qcow2")
    identity = storage.base_identity(base)
    assert identity == storage.BaseIdentity(sha256(base), 64 * 2**20, "qcow2")
    assert storage.base_identity(base) == identity  # second time from the cache


def test_diff_is_an_overlay_and_the_base_is_never_written(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base.qcow2")
    before = sha256(base)
    spec = spec_for(base, tmp_path / "vm" / "diff.qcow2")
    identity = storage.base_identity(base)
    assert storage.prepare_diff(spec, base, identity) is False
    info = storage.image_info(spec.diff_path)
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"
    assert storage.read_base_record(spec).identity == identity
    assert storage.prepare_diff(spec, base, identity) is True  # reused
    assert sha256(base) == before


def test_diff_on_another_base_is_refused_and_left_untouched(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base.qcow2")
    other = make_base(tmp_path / "other.qcow2", fill=b"different")
    spec = spec_for(base, tmp_path / "diff.qcow2")
    storage.prepare_diff(spec, base, storage.base_identity(base))
    diff_before, record_before = sha256(spec.diff_path), spec.base_record_path.read_text()
    with pytest.raises(BaseMismatchError) as caught:
        storage.prepare_diff(spec, other, storage.base_identity(other))
    message = str(caught.value)
    assert storage.base_identity(base).sha256[:16] in message
    assert storage.base_identity(other).sha256[:16] in message
    assert (sha256(spec.diff_path), spec.base_record_path.read_text()) == (diff_before, record_before)


def test_diff_without_record_is_refused(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base.qcow2")
    spec = spec_for(base, tmp_path / "diff.qcow2")
    storage.prepare_diff(spec, base, storage.base_identity(base))
    spec.base_record_path.unlink()
    with pytest.raises(BaseMismatchError, match="no record of its base"):
        storage.prepare_diff(spec, base, storage.base_identity(base))


def test_shared_diff_is_repointed_at_this_machines_base(tmp_path: Path) -> None:
    base = make_base(tmp_path / "mine" / "base.qcow2")
    spec = spec_for(base, tmp_path / "diff.qcow2")
    storage.prepare_diff(spec, base, storage.base_identity(base))
    (tmp_path / "teammate").mkdir()
    copy = tmp_path / "teammate" / "base.qcow2"
    copy.write_bytes(base.read_bytes())
    spec2 = spec_for(copy, spec.diff_path)
    assert storage.prepare_diff(spec2, copy, storage.base_identity(copy)) is True
    assert storage.image_info(spec.diff_path)["backing-filename"] == str(copy)


def test_disk_grows_and_never_shrinks(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base.qcow2")
    spec = spec_for(base, tmp_path / "diff.qcow2", disk_size="1G")
    storage.prepare_diff(spec, base, storage.base_identity(base))
    assert storage.image_info(spec.diff_path)["virtual-size"] == 2**30
    smaller = spec_for(base, spec.diff_path, disk_size="512M")
    with pytest.raises(ConfigError, match="disks never shrink"):
        storage.prepare_diff(smaller, base, storage.base_identity(base))
    assert storage.image_info(spec.diff_path)["virtual-size"] == 2**30


def test_lock_refuses_a_second_user(tmp_path: Path) -> None:
    diff = tmp_path / "diff.qcow2"
    first = storage.DiffLock(diff)
    with first.held(), pytest.raises(ConflictError, match="in use by pid"):
        storage.DiffLock(diff).acquire()
    with storage.DiffLock(diff).held():  # released: free again
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    served = tmp_path / "www"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def test_download_verifies_sha256_and_caches(tmp_path: Path, http_server: tuple[str, list[str]]) -> None:
    url, requests = http_server
    image = make_base(tmp_path / "www" / "cloud.qcow2")
    good = sha256(image)
    progress: list[int] = []
    path = storage.fetch_base_image(ImageSource(url=f"{url}/cloud.qcow2", sha256=good), lambda d, t: progress.append(d))
    assert sha256(path) == good and progress[-1] == image.stat().st_size
    assert storage.fetch_base_image(ImageSource(url=f"{url}/cloud.qcow2", sha256=good)) == path
    assert len(requests) == 1  # the second fetch came from the cache


def test_download_with_wrong_sha256_is_refused(tmp_path: Path, http_server: tuple[str, list[str]]) -> None:
    url, _ = http_server
    make_base(tmp_path / "www" / "cloud.qcow2")
    with pytest.raises(ImageError, match="refused: sha256 is"):
        storage.fetch_base_image(ImageSource(url=f"{url}/cloud.qcow2", sha256="0" * 64))
    assert not list((tmp_path / "cache").rglob("*.qcow2*"))
    with pytest.raises(ImageError, match="HTTP 404"):
        storage.fetch_base_image(ImageSource(url=f"{url}/missing.qcow2", sha256="0" * 64))


def test_shrinking_is_refused_before_anything_changes(tmp_path: Path) -> None:
    """Even a diff that would be repointed at this machine's base is left byte for byte."""
    from virtainer.machine import QuietReporter, plan_up

    base = make_base(tmp_path / "mine" / "base.qcow2")
    state = str(tmp_path / "state")  # not /var/lib/virtainer: writable without root
    spec = spec_for(base, tmp_path / "diff.qcow2", disk_size="1G", state_dir=state)
    storage.prepare_diff(spec, base, storage.base_identity(base))
    (tmp_path / "teammate").mkdir()
    moved = tmp_path / "teammate" / "base.qcow2"
    moved.write_bytes(base.read_bytes())
    before = sha256(spec.diff_path)
    smaller = spec_for(moved, spec.diff_path, disk_size="512M", accelerator="tcg", password_policy="none",
                       state_dir=state)  # fmt: skip
    with pytest.raises(ConfigError, match="disks never shrink"):
        plan_up(smaller, None, QuietReporter())
    assert sha256(spec.diff_path) == before
    assert storage.image_info(spec.diff_path)["backing-filename"] == str(base)
