"""The tiny guest in the generic image: logs, health, console, networking, libvirtd crash, stop.

One container (with a NIC: --cap-add NET_ADMIN --cap-add SYS_ADMIN) is shared by the module;
its tests run in file order and the last one stops it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.container.conftest import new_volume, tiny_options
from tests.container.docker import NETWORK_CAPS, Container, docker, run_to_end, start
from tests.container.tiny import TINY_BANNER, banner, console_answer
from tests.guests import TinyGuest

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def tiny_volume() -> Iterator[Path]:
    path = new_volume("tiny")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_vm(generic_image: str, tiny: TinyGuest, tiny_volume: Path) -> Iterator[Container]:
    options = tiny_options(tiny, tiny_volume, VIRTAINER_WAIT_FOR="running,ip,ssh")
    container = start(generic_image, "tiny", caps=NETWORK_CAPS, **options)  # type: ignore[arg-type]
    yield container
    container.remove()


def test_serial_console_and_stages_in_docker_logs(tiny_vm: Container) -> None:
    tiny_vm.wait_log(r"GUEST-READY", timeout_s=120)
    tiny_vm.wait_log(r"VM 'vm' is ready", timeout_s=120)
    logs = tiny_vm.logs()
    assert "HELLO-FROM-GUEST" in logs  # the guest's own serial output
    for stage in ("running", "ip", "ssh"):
        assert f"] stage {stage}" in logs, f"no line for stage {stage}:\n{logs[-2000:]}"
    assert "accelerator tcg" in logs or "accelerator kvm" in logs
    for line in logs.splitlines():
        if line.startswith("[virtainer") and "stage " in line:
            assert "s after domain start" in line


def test_health_turns_healthy_at_ready(tiny_vm: Container) -> None:
    seconds = tiny_vm.wait_healthy(timeout_s=120)
    print(f"TIMING tiny container healthy {seconds:.1f} s after docker run")
    assert tiny_vm.exec("test", "-e", "/run/virtainer/ready").returncode == 0


def test_every_port_of_the_container_reaches_the_guest(tiny_vm: Container) -> None:
    tiny_vm.wait_healthy(timeout_s=120)
    assert banner(tiny_vm.ip).startswith(TINY_BANNER)


def test_virsh_console_through_a_pseudo_terminal(tiny_vm: Container) -> None:
    tiny_vm.wait_log(r"GUEST-READY", timeout_s=120)
    console_answer(tiny_vm)


def test_killed_libvirtd_is_restarted_and_the_vm_survives(tiny_vm: Container) -> None:
    tiny_vm.wait_healthy(timeout_s=120)
    qemu_pid = tiny_vm.exec("cat", "/run/libvirt/qemu/vm.pid").stdout.strip()
    libvirtd_pid = tiny_vm.exec("cat", "/run/libvirtd.pid").stdout.strip()
    assert qemu_pid and libvirtd_pid
    assert tiny_vm.exec("sh", "-c", f"kill -9 {libvirtd_pid}").returncode == 0
    tiny_vm.wait_log(r"libvirtd back after", timeout_s=60)
    assert tiny_vm.exec("cat", "/run/libvirtd.pid").stdout.strip() != libvirtd_pid
    assert tiny_vm.exec("virsh", "domstate", "vm").stdout.strip() == "running"
    assert tiny_vm.exec("cat", "/run/libvirt/qemu/vm.pid").stdout.strip() == qemu_pid  # the same QEMU
    console_answer(tiny_vm)
    assert banner(tiny_vm.ip).startswith(TINY_BANNER)
    assert tiny_vm.running()


def test_second_container_on_a_diff_in_use_is_refused(
    tiny_vm: Container, generic_image: str, tiny: TinyGuest, tiny_volume: Path
) -> None:
    tiny_vm.wait_healthy(timeout_s=120)
    listing = sorted(path.name for path in tiny_volume.iterdir())
    done = run_to_end(generic_image, **tiny_options(tiny, tiny_volume, VIRTAINER_NETWORK="none"))  # type: ignore[arg-type]
    assert done.returncode == 4, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and "in use" in errors[0], done.stderr
    assert sorted(path.name for path in tiny_volume.iterdir()) == listing
    # the first one is unharmed
    assert tiny_vm.running() and tiny_vm.health() == "healthy"
    assert tiny_vm.exec("virsh", "domstate", "vm").stdout.strip() == "running"
    assert banner(tiny_vm.ip).startswith(TINY_BANNER)


def test_docker_stop_powers_the_guest_off_gracefully(tiny_vm: Container) -> None:
    tiny_vm.wait_healthy(timeout_s=120)
    seconds = tiny_vm.stop(timeout_s=30)
    print(f"TIMING tiny docker stop {seconds:.2f} s")
    assert tiny_vm.exit_code() == 0, tiny_vm.logs()[-2000:]
    logs = tiny_vm.logs()
    assert "the guest powered off (ACPI power button" in logs
    assert "destroyed" not in logs
    assert seconds < 25


def test_no_flags_vm_without_nic_and_guest_poweroff_ends_the_container(
    generic_image: str, tiny: TinyGuest, volume: Path
) -> None:
    """Plain `docker run` (no capability) runs a VM without a NIC; `poweroff` in it ends the container."""
    container = start(generic_image, "nonic", **tiny_options(tiny, volume, VIRTAINER_NETWORK="none"))  # type: ignore[arg-type]
    try:
        container.wait_log(r"GUEST-READY", timeout_s=120)
        assert "GUEST-NET: none" in container.logs()
        session = pexpect.spawn(f"docker exec -it {container.name} virsh console vm", timeout=30)
        session.expect("Escape character")
        session.sendline("")
        session.sendline("poweroff -f")
        assert container.wait_exit(timeout_s=60) == 0, container.logs()[-2000:]
        session.close(force=True)
        assert "the guest powered off (shutdown)" in container.logs()
    finally:
        container.remove()


def test_guest_disk_persists_across_containers(generic_image: str, tiny: TinyGuest, volume: Path) -> None:
    """The tiny guest counts its boots on its disk: a new container on the same volume sees 2."""
    for boots in (1, 2):
        container = start(generic_image, "persist", **tiny_options(tiny, volume, VIRTAINER_NETWORK="none"))  # type: ignore[arg-type]
        try:
            container.wait_log(rf"GUEST-DISK-BOOTS={boots}\b", timeout_s=120)
            container.stop(timeout_s=30)
            assert container.exit_code() == 0
        finally:
            container.remove()
    assert (volume / "local_image.qcow2").is_file()
    assert (volume / "local_image.qcow2.base.json").is_file()


def test_docker_restart_continues_the_vm(generic_image: str, tiny: TinyGuest, volume: Path) -> None:
    """`docker restart` keeps the container's files but not its processes or network devices:
    the controller starts from a clean libvirt runtime state and boots the same disk again."""
    options = tiny_options(tiny, volume, VIRTAINER_WAIT_FOR="running,ip,ssh")
    container = start(generic_image, "restart", caps=NETWORK_CAPS, **options)  # type: ignore[arg-type]
    try:
        container.wait_log(r"VM 'vm' is ready", timeout_s=120)
        docker("restart", "-t", "30", container.name, timeout=90)
        container.wait_log(r"GUEST-DISK-BOOTS=2\b", timeout_s=120)
        container.wait_log(r"(?s)VM 'vm' is ready.*VM 'vm' is ready", timeout_s=120)
        assert banner(container.ip).startswith(TINY_BANNER)
        assert container.logs().count("the guest powered off (ACPI power button") == 1
    finally:
        container.remove()
