"""Fixtures of the runtime tests: the runtime registered with the real dockerd by the project's own
command (`virtainer-runtime install`, removed again at the end), and test images built from Debian
packages by build-test-images.sh (cached by content hash)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtainer.runtime import artifacts

HERE = Path(__file__).parent
RUNTIME_EXE = Path(sys.executable).parent / "virtainer-runtime"
# not "virtainer" (a user's own registration stays untouched), and one per checkout: two checkouts
# testing at once on one engine must not repoint each other's runtime
RUNTIME_NAME = "virtainer-test-" + hashlib.sha256(str(RUNTIME_EXE).encode()).hexdigest()[:6]


def runtime_command(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RUNTIME_EXE), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def runtime() -> Iterator[str]:
    # the first install on a machine builds the runtime tree and compiles the guest kernel
    done = runtime_command("install", "--name", RUNTIME_NAME, timeout=artifacts.BUILD_TIMEOUT_S)
    assert done.returncode == 0, f"virtainer-runtime install failed: {done.stderr}"
    yield RUNTIME_NAME
    runtime_command("uninstall", "--name", RUNTIME_NAME)


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    done = subprocess.run(
        [str(HERE / "build-test-images.sh"), "busybox", "debian", "nginx", "static"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"build-test-images.sh failed: {done.stderr[-2000:]}"
    return dict(line.split() for line in done.stdout.splitlines())


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory on the host's disk (not tmpfs: virtiofsd and bind mounts use it), removed after."""
    path = Path("/var/tmp/virtainer-tests/runtime") / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)
