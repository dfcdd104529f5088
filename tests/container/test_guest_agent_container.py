"""Inside the guest through its agent, from inside the container: `docker exec C virtainer exec|cp|
keys|password|status` with `vm` as the default name, and a health check decided by wait_for's
exec:CMD probe.

The cloud guest boots once for the module; the assertions share it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from tests.container.conftest import new_volume
from tests.container.docker import NETWORK_CAPS, Container, docker, start
from tests.ssh import SshKey, make_key
from tests.waiting import wait_until

pytestmark = [pytest.mark.container, pytest.mark.cloud]

BOOT_TIMEOUT_S = 400
BIG = 50 * 1024 * 1024
SICK_MARKER = "/var/tmp/make-me-unhealthy"
PROBE = f"exec:test ! -e {SICK_MARKER}"


@dataclass
class AgentVm:
    container: Container
    key: SshKey

    def virtainer(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        command = ["docker", "exec", self.container.name, "virtainer", *args]
        return subprocess.run(command, capture_output=True, timeout=timeout, check=False)

    def ssh(self, command: str, key: SshKey | None = None) -> subprocess.CompletedProcess[str]:
        return (key or self.key).run(f"debian@{self.container.ip}", command)


@pytest.fixture(scope="module")
def agent_vm(debian_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentVm]:
    files = tmp_path_factory.mktemp("agent-files")
    files.chmod(0o755)
    key = make_key(files)
    volume = new_volume("agent")
    container = start(
        debian_image, "agent", caps=NETWORK_CAPS,
        env={"RAM": "1024", "CPU": "2", "VIRTAINER_WAIT_FOR": f"auto,{PROBE}"},
        volumes=[f"{key.public}:/tmp/id_rsa.pub:ro", f"{volume}:/mounted"],
    )  # fmt: skip
    try:
        seconds = container.wait_healthy(timeout_s=BOOT_TIMEOUT_S)
        print(f"\nTIMING agent container healthy {seconds:.1f} s after docker run")
        yield AgentVm(container, key)
    finally:
        container.remove()
        shutil.rmtree(volume, ignore_errors=True)


def test_healthy_only_after_the_exec_probe_passed(agent_vm: AgentVm) -> None:
    logs = agent_vm.container.logs()
    assert "] stage exec" in logs, logs[-3000:]
    status = json.loads(agent_vm.virtainer("status", "vm", "--json").stdout)
    records = status["readiness"]["stages"]  # the API's shape, as GET /v1/vms/vm gives it
    stages = [record["stage"] for record in records]
    assert stages[-1] == "exec" and "agent" in stages
    agent = next(record for record in records if record["stage"] == "agent")
    assert agent["detail"].startswith("qemu-ga ")


def test_exec_defaults_to_vm_and_keeps_streams_apart(agent_vm: AgentVm) -> None:
    done = agent_vm.virtainer("exec", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.stdout, done.stderr, done.returncode) == (b"out\n", b"err\n", 3)


def test_exec_50_mib_of_binary_output_arrives_intact(agent_vm: AgentVm, tmp_path: Path) -> None:
    made = agent_vm.virtainer(
        "exec", "--", "sh", "-c", f"head -c {BIG} /dev/urandom > /var/tmp/big && sha256sum /var/tmp/big"
    )
    assert made.returncode == 0, made.stderr
    output = tmp_path / "big"
    with output.open("wb") as sink:
        command = ["docker", "exec", agent_vm.container.name, "virtainer", "exec", "--", "cat", "/var/tmp/big"]
        done = subprocess.run(command, stdout=sink, stderr=subprocess.PIPE, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(output.read_bytes()).hexdigest() == made.stdout.split()[0].decode()


def test_exec_past_its_timeout_is_killed_in_the_guest(agent_vm: AgentVm) -> None:
    script = "sleep 300 & echo $! > /var/tmp/timed.pid; wait"
    done = agent_vm.virtainer("exec", "--timeout", "3", "--", "sh", "-c", script)
    assert done.returncode == 137 and b"killed in the guest" in done.stderr, done.stderr
    alive = agent_vm.virtainer(
        "exec", "--", "sh", "-c", "kill -0 $(cat /var/tmp/timed.pid) 2>/dev/null && echo alive; true"
    )
    assert alive.stdout == b""


def test_cp_a_directory_in_and_out_keeps_modes_and_contents(agent_vm: AgentVm) -> None:
    name = agent_vm.container.name
    make = (
        "set -e; umask 022; mkdir -p /tmp/tree/private; printf '#!/bin/sh\\n' > /tmp/tree/run.sh;"
        " chmod 755 /tmp/tree/run.sh;"
        " head -c 200000 /dev/urandom > /tmp/tree/private/secret; chmod 600 /tmp/tree/private/secret;"
        " chmod 700 /tmp/tree/private; echo shared > /tmp/tree/shared; chmod 664 /tmp/tree/shared;"
        " ln -s shared /tmp/tree/link; chmod 750 /tmp/tree"
    )
    docker("exec", name, "sh", "-c", make)
    copied_in = agent_vm.virtainer("cp", "/tmp/tree", "vm:/var/tmp/")
    assert copied_in.returncode == 0, copied_in.stderr
    copied_out = agent_vm.virtainer("cp", "vm:/var/tmp/tree", "/tmp/back")
    assert copied_out.returncode == 0, copied_out.stderr
    listing = "cd {} && find . -printf '%P %m %y %l\\n' | sort && find . -type f -exec sha256sum {{}} + | sort"
    original = docker("exec", name, "sh", "-c", listing.format("/tmp/tree")).stdout
    back = docker("exec", name, "sh", "-c", listing.format("/tmp/back")).stdout
    in_guest = agent_vm.virtainer("exec", "--", "sh", "-c", listing.format("/var/tmp/tree")).stdout.decode()
    assert back == original == in_guest
    assert " 750 d" in original and "private/secret 600 f" in original and "link 777 l shared" in original


def test_keys_add_lets_that_key_in_and_remove_shuts_it_out(agent_vm: AgentVm, tmp_path: Path) -> None:
    other = make_key(tmp_path)
    public = other.public.read_text().strip()
    assert agent_vm.ssh("true", key=other).returncode != 0
    added = agent_vm.virtainer("keys", "add", public)  # the name defaults to vm, the user to debian
    assert added.returncode == 0, added.stderr
    login = agent_vm.ssh("id -un", key=other)
    assert login.returncode == 0 and login.stdout.strip() == "debian", login.stderr
    removed = agent_vm.virtainer("keys", "remove", public)
    assert removed.returncode == 0, removed.stderr
    assert agent_vm.ssh("true", key=other).returncode != 0
    assert agent_vm.ssh("true").returncode == 0  # the mounted key is still there


def test_password_then_a_console_login_works(agent_vm: AgentVm) -> None:
    done = agent_vm.virtainer("password")
    assert done.returncode == 0, done.stderr
    password = done.stdout.decode().strip().rsplit(" ", 1)[1]
    console = pexpect.spawn(f"docker exec -it {agent_vm.container.name} virsh console vm --force", timeout=60)
    try:
        console.expect("Escape character")
        console.send("\r")
        if console.expect(["login: ", r"\$ "]) == 1:  # a session left open on the console: end it
            console.sendline("exit")
            console.expect("login: ")
        console.sendline("debian")
        console.expect("Password: ")
        console.sendline(password)
        console.expect(r"\$ ")
        console.sendline("echo LOGGED-IN-$((6*7))")
        console.expect("LOGGED-IN-42")
        console.sendline("exit")
    finally:
        console.sendcontrol("]")
        console.close(force=True)


def test_facts_match_what_ssh_sees(agent_vm: AgentVm) -> None:
    facts = json.loads(agent_vm.virtainer("status", "vm", "--json").stdout)["guest"]
    seen = agent_vm.ssh("cat /etc/os-release; echo ---; df -B1 --output=target,used,avail,fstype /")
    assert seen.returncode == 0, seen.stderr
    os_release, df = seen.stdout.split("---\n")
    release = dict(line.split("=", 1) for line in os_release.splitlines() if "=" in line)
    assert (facts["os_id"], facts["os_version_id"]) == (release["ID"], release["VERSION_ID"].strip('"'))
    target, used, available, fstype = df.splitlines()[1].split()
    root = next(item for item in facts["filesystems"] if item["mountpoint"] == target)
    assert (root["total_bytes"], root["fstype"]) == (int(used) + int(available), fstype)  # without reserved blocks


def test_ssh_from_inside_the_container(agent_vm: AgentVm) -> None:
    done = agent_vm.virtainer("ssh", "--", "id", "-un", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"debian"


def test_the_exec_probe_keeps_deciding_health(agent_vm: AgentVm) -> None:
    """Last: it makes the container unhealthy for a while."""
    assert agent_vm.virtainer("exec", "--", "touch", SICK_MARKER).returncode == 0
    wait_until(lambda: agent_vm.container.health() == "unhealthy", 90, "the failing probe to make it unhealthy", 1.0)
    assert "failed 3 times in a row" in agent_vm.container.logs()
    assert agent_vm.virtainer("exec", "--", "rm", SICK_MARKER).returncode == 0
    wait_until(lambda: agent_vm.container.health() == "healthy", 90, "the passing probe to make it healthy again", 1.0)
