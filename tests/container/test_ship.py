"""Ship a VM as an image: examples/vm-image/Dockerfile (FROM virtainer/generic, plain docker
build) with the tiny guest's disk; `virtainer image build` from that VM's diff; a real registry
(Debian's docker-registry) on loopback: push, remove the local copies, pull, run.

The tiny guest counts its boots in the first bytes of its disk: the shipped image's first boot
says 2, so the state travelled with the image, while the new container's diff is fresh. The
test disk is raw, 64 MiB with 48 MiB of random data: the base layer is big and incompressible,
so "the pushed diff layer is about the diff's size, not the base's" can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.container.conftest import GUEST_MOUNT, new_volume
from tests.container.docker import ROOT, Container, docker, start
from tests.guests import TINY_CMDLINE, TinyGuest
from tests.waiting import wait_until
from virtainer.orchestration import needs

pytestmark = pytest.mark.container

DOCKERFILE = ROOT / "examples" / "vm-image" / "Dockerfile"
RANDOM_MIB = 48


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tiny_boot_options(tiny: TinyGuest, volume: Path) -> dict[str, object]:
    """The baked disk is the base: only the kernel, initrd and command line come from outside."""
    return {
        "env": {
            "VIRTAINER_KERNEL": f"{GUEST_MOUNT}/{tiny.kernel.name}",
            "VIRTAINER_INITRD": f"{GUEST_MOUNT}/{tiny.initrd.name}",
            "VIRTAINER_CMDLINE": TINY_CMDLINE,
            "VIRTAINER_NETWORK": "none",
            "VIRTAINER_STOP_TIMEOUT": "20",
        },
        "volumes": [f"{tiny.kernel.parent}:{GUEST_MOUNT}:ro", f"{volume}:{needs.DIFF_MOUNT}"],
    }


def run_vm(image: str, tiny: TinyGuest, volume: Path, prefix: str) -> Container:
    return start(image, prefix, **tiny_boot_options(tiny, volume))  # type: ignore[arg-type]


def image_build(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "virtainer.cli", "image", "build", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ship")


@pytest.fixture(scope="module")
def vm_image(generic_image: str, tiny: TinyGuest, scratch: Path) -> Iterator[str]:
    """The example Dockerfile, built with plain docker build on the tiny guest's disk as raw."""
    context = scratch / "context"
    context.mkdir()
    shutil.copy(DOCKERFILE, context / "Dockerfile")
    disk = context / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(tiny.base_image), str(disk)], check=True)
    with disk.open("r+b") as stream:  # the guest reads bytes 0..8191; the rest is ballast
        stream.seek(16 << 20)
        stream.write(os.urandom(RANDOM_MIB << 20))
    tag = f"vt-ctest-vm-image-{uuid.uuid4().hex[:6]}:1"
    args = ["--build-arg", f"VIRTAINER_IMAGE={generic_image}", "--build-arg", "DISK=disk.raw"]
    done = docker("build", "-t", tag, *args, str(context), timeout=600)
    assert "is the guest base" in done.stdout + done.stderr, done.stdout[-2000:]
    yield tag
    docker("rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def first_volume() -> Iterator[Path]:
    path = new_volume("ship-first")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_dockerfile_from_generic_packages_a_disk_and_boots_it(
    vm_image: str, tiny: TinyGuest, first_volume: Path
) -> None:
    vm = run_vm(vm_image, tiny, first_volume, "shipfirst")
    try:
        vm.wait_log(r"GUEST-DISK-BOOTS=1\b", timeout_s=120)
        logs = vm.logs()
        assert "GUEST-DISK-MARKER=VIRTAINER-TINY-DISK v1" in logs
        record = json.loads(vm.exec("cat", "/var/lib/virtainer/images/image.json").stdout)
        assert record["path"] == "/var/lib/virtainer/images/base.img"
        # the identity was computed at build time: the start found it in the image's cache and
        # wrote nothing there (docker diff lists every file the container changed)
        cache = json.loads(vm.exec("cat", "/var/cache/virtainer/identities.json").stdout)
        assert record["sha256"] in [value["sha256"] for value in cache.values()]
        assert "/var/cache/virtainer/identities.json" not in docker("diff", vm.name).stdout
        base = json.loads((first_volume / "local_image.qcow2.base.json").read_text())["base"]
        assert base["sha256"] == record["sha256"] and base["format"] == "raw"
        # a running VM's diff is refused
        done = image_build(str(first_volume), "--from", vm_image, "-t", "vt-ctest-never:1")
        assert done.returncode == 4, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "is in use by a running VM" in lines[0], done.stderr
        assert docker("images", "-q", "vt-ctest-never:1").stdout.strip() == ""
        vm.stop(timeout_s=40)
        assert vm.exit_code() == 0
    finally:
        vm.remove()


@pytest.fixture(scope="module")
def other_image(generic_image: str, tiny: TinyGuest, scratch: Path) -> Iterator[str]:
    """The same Dockerfile on another disk (the tiny guest's qcow2 as it is): another base."""
    context = scratch / "other"
    context.mkdir()
    shutil.copy(DOCKERFILE, context / "Dockerfile")
    shutil.copy(tiny.base_image, context / "disk.qcow2")
    tag = f"vt-ctest-vm-other-{uuid.uuid4().hex[:6]}:1"
    docker("build", "-t", tag, "--build-arg", f"VIRTAINER_IMAGE={generic_image}", str(context), timeout=600)
    yield tag
    docker("rmi", "-f", tag, check=False)


@pytest.mark.parametrize("case", ["another-base", "no-baked-base"])
def test_a_diff_on_another_base_is_refused(case: str, other_image: str, generic_image: str, first_volume: Path) -> None:
    source, expected = {
        "another-base": (other_image, "was made on base sha256 "),
        "no-baked-base": (generic_image, "a virtainer image with a baked guest base"),
    }[case]
    before = sorted(path.name for path in first_volume.iterdir())
    done = image_build(str(first_volume), "--from", source, "-t", "vt-ctest-never:1")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert docker("images", "-q", "vt-ctest-never:1").stdout.strip() == ""
    assert sorted(path.name for path in first_volume.iterdir()) == before


@pytest.fixture(scope="module")
def registry(scratch: Path) -> Iterator[str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("no docker-registry: apt-get install docker-registry (scripts/setup-host.sh installs it)")
    port = free_port()
    config = scratch / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {scratch / 'registry'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = f"127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            return httpx.get(f"http://{address}/v2/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 30, "the local registry")
    try:
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def pushed_layers(registry: str, repository: str, tag: str) -> list[int]:
    manifest = httpx.get(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    ).json()
    return [int(layer["size"]) for layer in manifest["layers"]]


def test_a_baked_vm_travels_through_a_registry(
    vm_image: str, tiny: TinyGuest, first_volume: Path, registry: str
) -> None:
    repository = f"vt-ctest/vm-{uuid.uuid4().hex[:6]}"
    tag = f"{registry}/{repository}:1"
    diff = first_volume / "local_image.qcow2"
    diff_bytes = diff.stat().st_blocks * 512
    done = image_build(str(first_volume), "--from", vm_image, "-t", tag, "-e", "RAM=256")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"built {tag}: guest base /var/lib/virtainer/images/layers/")
    second = new_volume("ship-second")
    try:
        docker("push", tag, timeout=600)
        sizes = pushed_layers(registry, repository, "1")
        # the diff is the second-to-last layer (COPY), above the image's own layers; the bake's
        # RUN layer (record + identity cache) is last
        diff_layer, base_disk_layer = sizes[-2], sizes[-4]
        print(f"MEASURE diff {diff_bytes} B on disk, pushed layer {diff_layer} B, base disk layer {base_disk_layer} B")
        assert len(sizes) >= 4
        assert diff_layer <= diff_bytes * 1.2 + (1 << 20)
        assert base_disk_layer > RANDOM_MIB << 20  # the base's layer: random data does not compress
        assert diff_layer * 8 < base_disk_layer
        # remove the local copies, then pull and run
        docker("rmi", tag, vm_image)
        assert docker("images", "-q", tag).stdout.strip() == ""
        docker("pull", tag, timeout=600)
        vm = run_vm(tag, tiny, second, "shippulled")
        try:
            vm.wait_log(r"GUEST-DISK-BOOTS=2\b", timeout_s=120)  # the baked state: its first boot here
            assert vm.exec("printenv", "RAM").stdout.strip() == "256"
            info_command = ["qemu-img", "info", "-U", "--output=json", str(second / "local_image.qcow2")]
            info = json.loads(subprocess.check_output(info_command))
            assert info["backing-filename"].startswith("/var/lib/virtainer/images/layers/")
            vm.stop(timeout_s=40)
            assert vm.exit_code() == 0
        finally:
            vm.remove()
        fresh = (second / "local_image.qcow2").stat().st_blocks * 512
        assert fresh < diff_bytes * 2 + (1 << 20), f"the new container's diff is not fresh: {fresh} B"
    finally:
        docker("rmi", "-f", tag, check=False)
        shutil.rmtree(second, ignore_errors=True)
