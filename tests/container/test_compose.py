"""The compose examples with a real compose client on the real engine: examples/compose.yaml (one
VM) and examples/multi-vm (two VMs and a plain service that reaches them by name).

The shipped files are copied as they are; the test changes only their .env (the test-built images,
small VMs, a free host port) and adds one file of tiny-guest settings (`-f tiny.yaml`), as a user
adds an override. Each module-scoped project goes up, down (graceful: exit 0 from Docker's own
events, the diff clean by qemu-img check) and up again on the same named volumes (the guest's
boot counter on its disk says 2).
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.container.conftest import tiny_options
from tests.container.docker import Container
from tests.container.orchestration import (
    EXAMPLES,
    Project,
    base_image_of,
    compose_command,
    copy_example,
    qcow2_check,
    volume_path,
    watch_deaths,
)
from tests.container.tiny import TINY_BANNER, banner
from tests.guests import TINY_CMDLINE, TinyGuest
from tests.waiting import wait_until
from virtainer.orchestration import needs

pytestmark = pytest.mark.container

BOOT_S = 180
STOP_TIMEOUT_S = 20
DIFF = "local_image.qcow2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ssh_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    return key.with_suffix(".pub")


def tiny_override(tiny: TinyGuest, services: list[str], directory: Path) -> str:
    """The tiny guest's settings for each VM service (kernel, initrd, disk, a listener on tcp:80)."""
    options = tiny_options(tiny, directory)
    env = {k: v for k, v in options["env"].items() if k not in ("RAM", "CPU")}  # type: ignore[attr-defined]
    env["VIRTAINER_CMDLINE"] = f"{TINY_CMDLINE} guestlisten=tcp:80"
    guest_mount = options["volumes"][0]  # type: ignore[index]
    override = {"services": {name: {"environment": env, "volumes": [guest_mount]} for name in services}}
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(override))
    return path.name


def example_settings(generic_image: str, key: Path) -> dict[str, str]:
    return {
        "VM_IMAGE": generic_image,
        "VM_RAM": "256",
        "VM_CPU": "1",
        "VM_STOP_TIMEOUT": str(STOP_TIMEOUT_S),
        "VM_STOP_GRACE": f"{needs.grace_period_s(STOP_TIMEOUT_S)}s",
        "SSH_PUBLIC_KEY": str(key),
    }


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = compose_command()
    if command is None:
        pytest.skip("no compose client: apt-get install docker-compose (scripts/setup-host.sh installs it)")
    return command


def start_project(project: Project) -> None:
    project.run("up", "-d", timeout=BOOT_S + 60)


def healthy(project: Project, service: str) -> Container:
    container = Container(project.container(service))
    container.wait_healthy(timeout_s=BOOT_S)
    return container


def down_gracefully(project: Project, services: list[str], *extra: str) -> None:
    names = [project.container(service) for service in services]
    with watch_deaths([f"label=com.docker.compose.project={project.name}"]) as deaths:
        project.run("down", *extra, timeout=needs.grace_period_s(STOP_TIMEOUT_S) * 2 + 60)
        codes = deaths.wait_for(names, timeout_s=30)
    assert codes == dict.fromkeys(names, 0), f"exit codes at compose down: {codes}"


def assert_diffs_clean(project: Project, volumes: list[str]) -> None:
    for volume in volumes:
        diff = volume_path(project.volume(volume)) / DIFF
        assert diff.is_file(), f"no diff in volume {volume}"
        done = qcow2_check(diff)
        assert done.returncode == 0 and "No errors were found" in done.stdout, done.stdout + done.stderr


def remove_project(project: Project) -> None:
    project.run("down", "-v", "-t", "5", check=False, timeout=120)


# ---- one VM: examples/compose.yaml ---------------------------------------------------------------


@pytest.fixture(scope="module")
def single(
    compose: list[str], generic_image: str, tiny: TinyGuest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    scratch = tmp_path_factory.mktemp("compose-one")
    settings = example_settings(generic_image, ssh_key(scratch))
    settings["VM_SSH_PORT"], settings["VM_HTTP_PORT"] = str(free_port()), str(free_port())
    directory = copy_example(EXAMPLES, scratch / "example", settings)
    files = ["compose.yaml", tiny_override(tiny, ["vm"], directory)]
    project = Project(f"vtcompose{uuid.uuid4().hex[:6]}", directory, files, compose)
    try:
        yield project
    finally:
        remove_project(project)


def test_one_vm_comes_up_healthy_with_its_published_port(single: Project) -> None:
    start_project(single)
    vm = healthy(single, "vm")
    vm.wait_log(r"GUEST-DISK-BOOTS=1\b", timeout_s=30)
    port = int(single.run("port", "vm", "22").stdout.strip().rpartition(":")[2])
    assert wait_until(lambda: banner("127.0.0.1", port).startswith(TINY_BANNER), 30, "the guest on the published port")
    assert vm.inspect("{{.HostConfig.CapAdd}}") == f"[{' '.join(needs.NETWORK_CAPABILITIES)}]"


def test_one_vm_down_is_graceful_and_up_continues_the_diff(single: Project) -> None:
    healthy(single, "vm")
    down_gracefully(single, ["vm"])
    assert_diffs_clean(single, ["vm-disk"])
    start_project(single)
    healthy(single, "vm").wait_log(r"GUEST-DISK-BOOTS=2\b", timeout_s=30)


# ---- two VMs and a plain service: examples/multi-vm -------------------------------------------------


@pytest.fixture(scope="module")
def fleet(
    compose: list[str], generic_image: str, tiny: TinyGuest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    scratch = tmp_path_factory.mktemp("compose-multi")
    settings = example_settings(generic_image, ssh_key(scratch))
    settings["CLIENT_IMAGE"] = base_image_of(generic_image)
    directory = copy_example(EXAMPLES / "multi-vm", scratch / "example", settings)
    files = ["compose.yaml", tiny_override(tiny, ["vm1", "vm2"], directory)]
    project = Project(f"vtmulti{uuid.uuid4().hex[:6]}", directory, files, compose)
    try:
        yield project
    finally:
        remove_project(project)


def client_reached_both(project: Project) -> bool:
    logs = project.run("logs", "--no-color", "client").stdout
    return all(f"{vm}:22 {TINY_BANNER.decode()}" in logs for vm in ("vm1", "vm2"))


def test_the_plain_service_reaches_both_guests_by_name(fleet: Project) -> None:
    start_project(fleet)  # the client starts once both VMs are healthy (depends_on)
    for vm in ("vm1", "vm2"):
        healthy(fleet, vm).wait_log(r"GUEST-DISK-BOOTS=1\b", timeout_s=30)
    wait_until(lambda: client_reached_both(fleet), 60, "the client's banner lines for vm1 and vm2")
    # another guest port, by name, from the plain container
    probe = "exec 3<>/dev/tcp/vm2/80 && head -n 1 <&3"
    reply = fleet.run("exec", "-T", "client", "timeout", "10", "bash", "-c", probe).stdout
    assert reply.startswith("TINY-TCP-80"), reply


def test_down_stops_both_vms_gracefully_and_up_keeps_their_disks(fleet: Project) -> None:
    down_gracefully(fleet, ["vm1", "vm2"])
    assert_diffs_clean(fleet, ["vm1-disk", "vm2-disk"])
    start_project(fleet)
    for vm in ("vm1", "vm2"):
        healthy(fleet, vm).wait_log(r"GUEST-DISK-BOOTS=2\b", timeout_s=30)
    try:  # a loaded machine has failed this at 60 s: the guests' second boot is slower to answer
        wait_until(lambda: client_reached_both(fleet), 120, "the client's banner lines after the second up")
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}\n{fleet.run('logs', '--no-color', 'client').stdout[-2000:]}") from None
