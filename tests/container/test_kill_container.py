"""SIGKILL of the container while the guest writes to its disk, 20 runs on one volume (issue 8,
"Tests that must pass"): every time the diff opens, `qemu-img check` finds it clean, and every
boot the guest counted on it is still there. The tiny guest in the generic image."""

from __future__ import annotations

import time
from pathlib import Path

import pexpect
import pytest

from tests.container.conftest import tiny_options
from tests.container.docker import Container, docker, start
from tests.guests import TinyGuest
from tests.tiny_vm import WRITE_LOOP, assert_clean_qcow2

pytestmark = pytest.mark.container
KILL_RUNS = 20


def start_guest_writes(container: Container, timeout_s: float = 30) -> None:
    """Type the write loop into the guest's shell through `docker exec -it C virsh console vm`."""
    session = pexpect.spawn(f"{container.engine} exec -it {container.name} virsh console vm", timeout=timeout_s)
    try:
        session.expect("Escape character")
        deadline = time.monotonic() + timeout_s
        while True:  # the prompt may have been printed long ago: ask until the shell answers
            session.sendline("echo READY-$((6*7))")
            try:
                session.expect("READY-42", timeout=3)
                break
            except pexpect.TIMEOUT:
                assert time.monotonic() < deadline, "the guest's shell did not answer on the console"
        session.sendline(WRITE_LOOP)
        session.expect("WROTE-BLOCKS\r?\n", timeout=timeout_s)  # the loop runs
        # no wait for virsh to detach: the guest's output floods the console, and the container
        # is killed next anyway
    finally:
        session.close(force=True)


def test_container_killed_during_guest_writes_leaves_a_clean_diff(
    generic_image: str, tiny: TinyGuest, volume: Path
) -> None:
    diff = volume / "local_image.qcow2"
    for run in range(1, KILL_RUNS + 1):
        container = start(generic_image, "kill", **tiny_options(tiny, volume, VIRTAINER_NETWORK="none"))  # type: ignore[arg-type]
        try:
            container.wait_log(rf"GUEST-DISK-BOOTS={run}\b", timeout_s=120)  # every earlier boot kept
            container.wait_log(r"GUEST-READY", timeout_s=60)
            start_guest_writes(container)
            container.wait_log(r"(?s)(WROTE-BLOCKS\r?\n.*){3}", timeout_s=60)
            docker("kill", "-s", "KILL", container.name, timeout=60)
            container.wait_exit(30)
        finally:
            container.remove()
        assert_clean_qcow2(diff)  # it opens, and nothing in it is broken
