"""Rootful Podman runs the same image with the same commands (optional: needs `podman`).

Podman's default capability set lacks CAP_NET_RAW (dnsmasq needs it for the guest's DHCP) and
CAP_MKNOD (so /dev/net/tun cannot be created inside the container): a VM with a NIC needs
`--cap-add NET_RAW --device /dev/net/tun` there, and without them the controller says so.

On these machines two Podman defaults cannot apply, neither of them virtainer's doing: raising
RLIMIT_NOFILE/NPROC (the host's capability bounding set lacks CAP_SYS_RESOURCE: explicit lower
`--ulimit`s) and
health-check timers (they need systemd; `--no-healthcheck`, podman logs an error otherwise).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.container.conftest import tiny_options
from tests.container.docker import NETWORK_CAPS, docker, run_to_end, start
from tests.container.tiny import TINY_BANNER, banner, console_answer
from tests.guests import TinyGuest

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (apt-get install podman)"),
]


PODMAN_CAPS = (*NETWORK_CAPS, "NET_RAW")
PODMAN_HOST_FLAGS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--no-healthcheck"]


@pytest.fixture(scope="module")
def podman_image(generic_image: str) -> str:
    """The generic image, copied from Docker's store into Podman's (once per content key)."""
    tag = f"localhost/{generic_image}"
    if docker("image", "exists", tag, engine="podman", check=False).returncode != 0:
        save = f"docker save {generic_image} | podman load -q"
        done = subprocess.run(["sh", "-c", save], capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr
    return tag


@pytest.mark.parametrize(
    ("caps", "flag"), [(NETWORK_CAPS, "--cap-add NET_RAW"), (PODMAN_CAPS, "--device /dev/net/tun")]
)
def test_missing_capability_or_device_is_named(
    podman_image: str, tiny: TinyGuest, volume: Path, caps: tuple[str, ...], flag: str
) -> None:
    options = tiny_options(tiny, volume)
    done = run_to_end(podman_image, engine="podman", caps=caps, extra=PODMAN_HOST_FLAGS, **options)  # type: ignore[arg-type]
    errors = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(errors) == 1, done.stdout + done.stderr
    assert flag in errors[0]
    assert list(volume.iterdir()) == []


def test_rootful_podman_runs_the_vm(podman_image: str, tiny: TinyGuest, volume: Path) -> None:
    options = tiny_options(tiny, volume, VIRTAINER_WAIT_FOR="running,ip,ssh")
    container = start(
        podman_image,
        "podman",
        engine="podman",
        caps=PODMAN_CAPS,
        extra=[*PODMAN_HOST_FLAGS, "--device", "/dev/net/tun"],
        **options,
    )  # type: ignore[arg-type]
    try:
        container.wait_log(r"VM 'vm' is ready", timeout_s=120)
        assert "GUEST-READY" in container.logs()
        assert banner(container.ip).startswith(TINY_BANNER)
        console_answer(container)
        container.stop(timeout_s=30)
        assert container.exit_code() == 0
        assert "the guest powered off (ACPI power button" in container.logs()
    finally:
        container.remove()
