"""The fleet view over three real containers: `virtainer status --docker` (by label on this
engine), `--api URL` repeated and `--fleet FILE`, and the API's own GET /v1/fleet with peers.

Three tiny guests without a NIC (the API still listens on each container's address); a unique
label keeps other developers' containers on this engine out of the listing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.container.conftest import new_volume, tiny_options
from tests.container.docker import Container, docker, start
from tests.guests import TinyGuest
from tests.waiting import wait_until
from virtainer.orchestration import needs

pytestmark = pytest.mark.container

VM_NAMES = ("alpha", "beta", "gamma")
TOKEN = "fleet-" + uuid.uuid4().hex  # every route but health needs it: the fleet shares one


def api_url(container: Container) -> str:
    return f"http://{container.ip}:{needs.API_PORT}"


@pytest.fixture(scope="module")
def label() -> str:
    return f"vt-fleet-test={uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def three(generic_image: str, tiny: TinyGuest, label: str) -> Iterator[list[Container]]:
    containers: list[Container] = []
    volumes: list[Path] = []
    try:
        for vm in VM_NAMES:
            volume = new_volume(f"fleet-{vm}")
            volumes.append(volume)
            env = {"VIRTAINER_NETWORK": "none", "VM_NAME": vm, "VIRTAINER_API_TOKEN": TOKEN}
            if vm == VM_NAMES[-1]:  # the last one's API lists the other two as well
                env["VIRTAINER_API_PEERS"] = " ".join(api_url(c) for c in containers)
            options = tiny_options(tiny, volume, **env)
            containers.append(start(generic_image, f"fleet-{vm}", extra=["--label", label], **options))  # type: ignore[arg-type]
        for container in containers:
            container.wait_healthy(timeout_s=120)
        yield containers
    finally:
        for container in containers:
            container.remove()
        for volume in volumes:
            shutil.rmtree(volume, ignore_errors=True)


def status(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "virtainer.cli", "status", *args]
    env = {**os.environ, "VIRTAINER_API_TOKEN": TOKEN}  # --docker reads it from the containers themselves
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)


def test_status_over_docker_labels_lists_all_three(three: list[Container], label: str) -> None:
    done = status("--docker", "--label", label, "--json")
    assert done.returncode == 0, done.stderr
    members = {member["source"]: member for member in json.loads(done.stdout)}
    assert set(members) == {container.name for container in three}
    for container, vm in zip(three, VM_NAMES, strict=True):
        member = members[container.name]
        assert member["url"] == api_url(container) and member["error"] is None
        assert [(v["name"], v["state"]) for v in member["vms"]] == [(vm, "running")]
    stats = docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *[c.name for c in three]).stdout
    print(f"MEASURE container memory with a 256 MiB tiny guest (TCG):\n{stats}")


def test_status_over_urls_and_a_fleet_file_in_one_table(three: list[Container], tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.txt"
    fleet.write_text(f"# the third one, with its token\n{api_url(three[2])} {TOKEN}\n")
    fleet.chmod(0o600)
    done = status("--api", api_url(three[0]), "--api", api_url(three[1]), "--fleet", str(fleet))
    assert done.returncode == 0, done.stderr
    # the status table with a source column: source, name, state (and the address) whole, first
    header, _rule, *lines = done.stdout.splitlines()
    assert header.split()[:3] == ["source", "name", "state"], done.stdout
    rows = [line.split()[:3] for line in lines if line.strip()]
    assert rows == [[api_url(container), vm, "running"] for container, vm in zip(three, VM_NAMES, strict=True)]


def test_an_unreachable_member_is_one_line_and_the_rest_still_listed(three: list[Container]) -> None:
    dead = "http://127.0.0.1:9"
    done = status("--api", api_url(three[0]), "--api", dead, "--json")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"virtainer: {dead}: cannot reach"), done.stderr
    members = json.loads(done.stdout)
    assert [m["vms"][0]["name"] for m in members if m["vms"]] == [VM_NAMES[0]]


def test_a_fleet_file_with_tokens_must_be_private(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.txt"
    fleet.write_text(f"http://127.0.0.1:9 {'t' * 32}\n")
    fleet.chmod(0o644)
    done = status("--fleet", str(fleet))
    assert done.returncode == 2 and "chmod 600" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_api_lists_its_peers_vms_too(three: list[Container]) -> None:
    url = f"{api_url(three[2])}/v1/fleet"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    members = wait_until(lambda: httpx.get(url, headers=headers, timeout=60).json(), 120, "GET /v1/fleet")
    assert [m["source"] for m in members] == ["self", api_url(three[0]), api_url(three[1])]
    assert [m["vms"][0]["name"] for m in members] == [VM_NAMES[2], VM_NAMES[0], VM_NAMES[1]]
