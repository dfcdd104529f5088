"""Fixtures of the container tests: images built by scripts/build-images.sh (cached by content
hash, so a second run builds nothing), the test guests, and volumes for the diff."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.docker import Build, build_image
from tests.guests import TINY_CMDLINE, TinyGuest, cloud_guest, tiny_guest
from virtainer.orchestration import needs

VOLUME_ROOT = Path(os.environ.get("VIRTAINER_TEST_VM_ROOT", "/var/tmp/virtainer-tests")) / "container"
GUEST_MOUNT = "/guest"


@pytest.fixture(scope="session")
def generic_build() -> Build:
    return build_image("generic")


@pytest.fixture(scope="session")
def generic_image(generic_build: Build) -> str:
    return generic_build.tag


@pytest.fixture(scope="session")
def debian_build() -> Build:
    """virtainer/debian, baked from the project's own Debian 12 test cloud image (a context file)."""
    guest = cloud_guest()
    return build_image("debian", {"IMAGE_FILE": str(guest.base_image), "OS_VARIANT": "debian12"})


@pytest.fixture(scope="session")
def debian_image(debian_build: Build) -> str:
    return debian_build.tag


@pytest.fixture(scope="session")
def tiny() -> TinyGuest:
    return tiny_guest()


def tiny_options(guest: TinyGuest, volume: Path, **env: str) -> dict[str, object]:
    """docker run options that boot the tiny guest (direct kernel boot) from the generic image."""
    return {
        "env": {
            "IMAGE": f"{GUEST_MOUNT}/{guest.base_image.name}",
            "VIRTAINER_KERNEL": f"{GUEST_MOUNT}/{guest.kernel.name}",
            "VIRTAINER_INITRD": f"{GUEST_MOUNT}/{guest.initrd.name}",
            "VIRTAINER_CMDLINE": TINY_CMDLINE,
            "RAM": "256",
            "CPU": "1",
            **env,
        },
        "volumes": [f"{guest.kernel.parent}:{GUEST_MOUNT}:ro", f"{volume}:{needs.DIFF_MOUNT}"],
    }


def new_volume(label: str) -> Path:
    path = VOLUME_ROOT / f"{label}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def volume(request: pytest.FixtureRequest) -> Iterator[Path]:
    path = new_volume(request.node.name[:30].replace("[", "-").replace("]", ""))
    yield path
    shutil.rmtree(path, ignore_errors=True)
