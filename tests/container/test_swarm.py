"""examples/swarm/stack.yaml on a real single-node swarm: a replicated VM service (`vm`) and a
second VM service (`db`) on an overlay network, tiny guests baked into an image built from
examples/vm-image/Dockerfile (the guest counts its boots on its disk: the diff's state).

The swarm is a second dockerd of the test's own, in its own network namespace
(tests/container/private_engine.py): the shared engine stays as it was, not a swarm, while
other tests use it. One deploy for the module; the tests follow one another on it: deploy,
published ports, scale 2 -> 3 -> 1, `docker service update` to a rebuilt image (same guest
base, new image), scale back to 3 (the removed slots come back on their diffs), `docker stack rm`.

The routing mesh and service VIPs need the kernel's IPVS. Where it is missing (this machine's
kernel has no CONFIG_IP_VS), the vm service's port is published in host mode (a port per task)
instead of the shipped ingress mode, the mesh test is skipped with that reason, and `db` is
reached by `tasks.db`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.container.conftest import VOLUME_ROOT
from tests.container.docker import ROOT, docker
from tests.container.orchestration import EXAMPLES, qcow2_check, watch_deaths
from tests.container.private_engine import PrivateEngine, private_engine
from tests.container.tiny import TINY_BANNER
from tests.guests import TINY_CMDLINE, TinyGuest
from tests.waiting import wait_until
from virtainer.orchestration import needs

pytestmark = pytest.mark.container

BOOT_S = 180
STOP_TIMEOUT_S = 20
GRACE_S = needs.grace_period_s(STOP_TIMEOUT_S)
MESH_PORT = 2222
DIFF = "local_image.qcow2"
IPVS = Path("/proc/net/ip_vs")
NO_MESH = "the routing mesh needs IPVS and this kernel has none (no /proc/net/ip_vs, CONFIG_IP_VS unset)"
TCG_LINE = "accelerator tcg (KVM unusable: /dev/kvm does not exist)"
CAPS_LINE = re.compile(r"not privileged: the NAT network with minimal capabilities \(created /dev/net/tun, remounted")

# the tiny guest's kernel and command line baked in as well: a Swarm task has no bind mounts here
TINY_LAYERS = f"""
COPY vmlinuz initrd.gz /var/lib/virtainer/tiny/
ENV VIRTAINER_KERNEL=/var/lib/virtainer/tiny/vmlinuz \\
    VIRTAINER_INITRD=/var/lib/virtainer/tiny/initrd.gz \\
    VIRTAINER_CMDLINE="{TINY_CMDLINE}"
ARG REVISION=1
LABEL org.virtainer.test.revision=$REVISION
"""


def swarm_state(engine: PrivateEngine | None = None) -> str:
    args = ("info", "-f", "{{.Swarm.LocalNodeState}}")
    return (engine.docker(*args) if engine else docker(*args)).stdout.strip()


@pytest.fixture(scope="module")
def engine(generic_image: str) -> Iterator[PrivateEngine]:
    missing = [tool for tool in ("dockerd", "nsenter", "ip") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"a private dockerd needs root and {', '.join(missing) or 'its tools'}")
    shared_before = swarm_state()
    with private_engine(VOLUME_ROOT.parent / "engines") as engine:
        engine.load(generic_image)
        engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        assert swarm_state(engine) == "active"
        yield engine
    assert swarm_state() == shared_before, "the shared engine's swarm state changed"


@dataclass
class Stack:
    name: str
    engine: PrivateEngine
    mesh: bool
    context: Path  # the tiny VM image's build context
    images: dict[int, str] = field(default_factory=dict)  # revision -> image ID
    kept_slot: int = 0  # the vm slot that scaling down to 1 left running

    def service(self, name: str) -> str:
        return f"{self.name}_{name}"

    def running(self, service: str) -> dict[int, str]:
        """slot -> container of the service's running tasks (names are SERVICE.SLOT.TASK)."""
        label = f"label=com.docker.swarm.service.name={self.service(service)}"
        names = self.engine.docker("ps", "--filter", label, "--format", "{{.Names}}").stdout.split()
        return {int(name.split(".")[1]): name for name in names}

    def inspect(self, container: str, template: str) -> str:
        return self.engine.docker("inspect", "-f", template, container).stdout.strip()

    def logs(self, container: str) -> str:
        done = self.engine.docker("logs", container, check=False)
        return done.stdout + done.stderr

    def wait_tasks(self, service: str, slots: set[int], revision: int = 1) -> dict[int, str]:
        """Exactly these slots running the image of that revision, each container healthy."""

        def settled() -> dict[int, str] | None:
            tasks = self.running(service)
            if set(tasks) != slots:
                return None
            for container in tasks.values():
                image, health = self.inspect(container, "{{.Image}} {{.State.Health.Status}}").split()
                if image != self.images[revision]:
                    return None  # an old task, still stopping (unhealthy by then)
                if health == "unhealthy":
                    raise AssertionError(f"{container} is unhealthy:\n{self.logs(container)[-3000:]}")
                if health != "healthy":
                    return None
            return tasks

        try:
            return wait_until(settled, BOOT_S, f"{service} slots {sorted(slots)} healthy", interval_s=1.0)
        except AssertionError as timed_out:
            tasks = self.engine.docker("service", "ps", "--no-trunc", self.service(service)).stdout
            raise AssertionError(f"{timed_out}\n{tasks}") from None

    def diff(self, service: str, slot: int) -> Path:
        volume = f"{self.service(service)}-disk-{slot}"
        mountpoint = self.engine.docker("volume", "inspect", "-f", "{{.Mountpoint}}", volume).stdout.strip()
        return Path(mountpoint) / DIFF

    def boots(self, container: str) -> int:
        # healthy is `running` for the tiny guest: its kernel may still be booting (slow under TCG)
        wait_until(lambda: "GUEST-DISK-BOOTS=" in self.logs(container), 120, f"the boot counter of {container}")
        return int(re.findall(r"GUEST-DISK-BOOTS=(\d+)", self.logs(container))[-1])

    def stop_gracefully(self, *command: str, leaving: Callable[[], list[str]]) -> list[str]:
        """Run the command: the containers `leaving` names once it ran each exit 0 (their guests
        powered off) within the grace period. Returns those containers."""
        filters = [f"label=com.docker.stack.namespace={self.name}"]
        with watch_deaths(filters, self.engine.docker_command) as deaths:
            started = time.monotonic()
            self.engine.docker(*command, timeout=GRACE_S + 60)
            containers = leaving()
            codes = deaths.wait_for(containers, timeout_s=GRACE_S + 30)
            seconds = time.monotonic() - started
        assert codes == dict.fromkeys(containers, 0), f"exit codes after {' '.join(command)}: {codes}"
        assert seconds < GRACE_S, f"the VMs took {seconds:.0f} s to stop, the grace period is {GRACE_S} s"
        return containers


def tiny_context(tiny: TinyGuest, directory: Path) -> Path:
    directory.mkdir()
    dockerfile = (EXAMPLES / "vm-image" / "Dockerfile").read_text() + TINY_LAYERS
    (directory / "Dockerfile").write_text(dockerfile)
    for source in (tiny.kernel, tiny.initrd):
        shutil.copy(source, directory / source.name)
    shutil.copy(tiny.base_image, directory / "disk.qcow2")  # the Dockerfile's DISK default
    return directory


def build_tiny(stack: Stack, generic_image: str, revision: int, *extra: str) -> str:
    """examples/vm-image/Dockerfile (plus the tiny guest's kernel) with plain docker build."""
    tag = f"{stack.name}-vm:{revision}"
    args = ["--build-arg", f"VIRTAINER_IMAGE={generic_image}", "--build-arg", f"REVISION={revision}"]
    stack.engine.docker("build", "-q", "-t", tag, *args, *extra, str(stack.context), timeout=600)
    stack.images[revision] = stack.engine.docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip()
    return tag


def stack_file(directory: Path, mesh: bool) -> Path:
    """The shipped stack; without IPVS, the vm service's port in host mode (a port per task)."""
    path = directory / "stack.yaml"
    stack = yaml.safe_load((EXAMPLES / "swarm" / "stack.yaml").read_text())
    if not mesh:
        stack["services"]["vm"]["ports"] = [{"target": needs.GUEST_SSH_PORT, "mode": "host"}]
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(
    engine: PrivateEngine, generic_image: str, tiny: TinyGuest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    scratch = tmp_path_factory.mktemp("swarm")
    stack = Stack(f"vt{uuid.uuid4().hex[:6]}", engine, IPVS.exists(), tiny_context(tiny, scratch / "context"))
    image = build_tiny(stack, generic_image, 1)
    settings = {
        "VM_IMAGE": image,
        "VM_RAM": "256",
        "VM_CPU": "1",
        "VM_STOP_TIMEOUT": str(STOP_TIMEOUT_S),
        "VM_STOP_GRACE": f"{GRACE_S}s",
        "VM_SSH_PORT": str(MESH_PORT),
    }
    done = subprocess.run(
        [*engine.docker_command, "stack", "deploy", "-c", str(stack_file(scratch, stack.mesh)), stack.name],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **settings}, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    yield stack
    engine.docker("stack", "rm", stack.name, check=False)


def test_each_task_boots_on_its_slots_volume_and_logs_what_swarm_lacks(stack: Stack) -> None:
    tasks = {("vm", slot): name for slot, name in stack.wait_tasks("vm", {1, 2}).items()}
    tasks |= {("db", slot): name for slot, name in stack.wait_tasks("db", {1}).items()}
    for (service, slot), container in tasks.items():
        assert stack.boots(container) == 1, container
        logs = stack.logs(container)
        assert TCG_LINE in logs and CAPS_LINE.search(logs), logs[-3000:]
        mounts = {
            mount["Destination"]: mount.get("Name")
            for mount in json.loads(stack.inspect(container, "{{json .Mounts}}"))
        }
        assert mounts[str(needs.DIFF_MOUNT)] == f"{stack.service(service)}-disk-{slot}"
        granted = json.loads(stack.inspect(container, "{{json .HostConfig.CapAdd}}"))
        assert granted == [f"CAP_{name}" for name in needs.NETWORK_CAPABILITIES], granted  # cap_add applied
        assert stack.inspect(container, "{{.HostConfig.Privileged}} {{json .HostConfig.Devices}}") == "false null"


def test_the_routing_mesh_reaches_the_guests(stack: Stack) -> None:
    if not stack.mesh:
        pytest.skip(NO_MESH)
    for _ in range(4):  # round robin over both replicas: every connection must reach a guest
        assert stack.engine.banner(MESH_PORT) == TINY_BANNER.decode()


def test_each_replicas_published_port_reaches_its_guest(stack: Stack) -> None:
    if stack.mesh:
        pytest.skip("the ports are in ingress mode (the routing mesh test covers them)")
    for container in stack.running("vm").values():
        port = int(stack.engine.docker("port", container, "22/tcp").stdout.split()[0].rpartition(":")[2])
        reached = wait_until(lambda: stack.engine.banner(port) or None, 30, f"the guest of {container} on {port}")  # noqa: B023
        assert reached == TINY_BANNER.decode()


def test_a_vm_reaches_the_other_service_over_the_overlay(stack: Stack) -> None:
    name = "db" if stack.mesh else "tasks.db"  # a VIP needs IPVS; tasks.NAME is the task's own address
    probe = f"exec 3<>/dev/tcp/{name}/22 && head -n 1 <&3"
    container = stack.running("vm")[1]

    def reply() -> str:
        return stack.engine.docker("exec", container, "timeout", "10", "bash", "-c", probe, check=False).stdout

    assert wait_until(reply, 30, f"{name}:22 from {container}").strip() == TINY_BANNER.decode()


def test_scaling_adds_vms_on_new_slots_and_removes_them_gracefully(stack: Stack) -> None:
    before = stack.wait_tasks("vm", {1, 2})
    stack.engine.docker("service", "scale", "-d", f"{stack.service('vm')}=3")
    after = stack.wait_tasks("vm", {1, 2, 3})
    assert {slot: after[slot] for slot in before} == before, "scaling up replaced running VMs"
    assert stack.boots(after[3]) == 1

    def removed() -> list[str]:  # Swarm chooses which tasks go
        wait_until(lambda: len(stack.running("vm")) == 1, GRACE_S, "two of the three vm tasks to end")
        return [container for container in after.values() if container not in stack.running("vm").values()]

    stack.stop_gracefully("service", "scale", "-d", f"{stack.service('vm')}=1", leaving=removed)
    ((stack.kept_slot, kept),) = stack.running("vm").items()
    assert kept == after[stack.kept_slot]
    for slot in set(after) - {stack.kept_slot}:
        done = qcow2_check(stack.diff("vm", slot))
        assert done.returncode == 0 and "No errors were found" in done.stdout, done.stdout + done.stderr


def test_an_update_to_a_rebuilt_image_keeps_every_slots_diff(stack: Stack, generic_image: str) -> None:
    # a rebuild from scratch (new layers, the disk copied and baked again): same guest base
    image = build_tiny(stack, generic_image, 2, "--no-cache")
    assert stack.images[2] != stack.images[1]
    old = [*stack.running("vm").values(), *stack.running("db").values()]
    with watch_deaths([f"label=com.docker.stack.namespace={stack.name}"], stack.engine.docker_command) as deaths:
        for service in ("vm", "db"):
            stack.engine.docker("service", "update", "-d", "--image", image, stack.service(service))
        vm = stack.wait_tasks("vm", {stack.kept_slot}, revision=2)
        db = stack.wait_tasks("db", {1}, revision=2)
        assert deaths.wait_for(old, timeout_s=30) == dict.fromkeys(old, 0)
    assert stack.boots(vm[stack.kept_slot]) == 2 and stack.boots(db[1]) == 2
    # the slots scaling down removed come back on their own diffs, under the new image
    stack.engine.docker("service", "scale", "-d", f"{stack.service('vm')}=3")
    for slot, container in stack.wait_tasks("vm", {1, 2, 3}, revision=2).items():
        assert stack.boots(container) == 2, f"slot {slot}"


def test_stack_rm_stops_every_vm_gracefully(stack: Stack) -> None:
    containers = [*stack.running("vm").values(), *stack.running("db").values()]
    assert len(containers) == 4
    stack.stop_gracefully("stack", "rm", stack.name, leaving=lambda: containers)
    volumes = stack.engine.docker("volume", "ls", "-q").stdout.split()
    for service, slot in (("vm", 1), ("vm", 2), ("vm", 3), ("db", 1)):
        assert f"{stack.service(service)}-disk-{slot}" in volumes, "stack rm keeps the diffs' volumes"
        done = qcow2_check(stack.diff(service, slot))
        assert done.returncode == 0 and "No errors were found" in done.stdout, done.stdout + done.stderr
