"""Manager mode against the real Docker engine: `virtainer serve --docker`, its page in a real
headless browser. A tiny-guest VM container is created from the page, reaches ready, answers on
its console (through the manager, with the container's own token), is stopped and removed; its
volume remains. Screenshots go to tests/artifacts/manager/."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import VIRTAINER, ApiServer, free_port, serving
from tests.browser import chromium, console_answers, logged_in_page, shot
from tests.container.docker import docker, start, unique
from tests.guests import TINY_CMDLINE, TinyGuest
from virtainer.orchestration import needs
from virtainer.orchestration.engine import MANAGED_LABEL

pytestmark = pytest.mark.container
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra")
expect = playwright_sync.expect
FAKE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZpcnRhaW5lci1tYW5hZ2VyLXRlc3Qta2V5LTAwMDA manager-test"


@pytest.fixture(scope="module")
def tiny_image(generic_image: str, tiny: TinyGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The generic image with the tiny guest inside (what the page's form can name)."""
    context = tmp_path_factory.mktemp("tiny-image")
    for path in (tiny.kernel, tiny.initrd, tiny.base_image):
        shutil.copy(path, context / path.name)
    (context / "Dockerfile").write_text(
        f"FROM {generic_image}\n"
        f"COPY {tiny.kernel.name} {tiny.initrd.name} {tiny.base_image.name} /guest/\n"
        f"ENV IMAGE=/guest/{tiny.base_image.name} VIRTAINER_KERNEL=/guest/{tiny.kernel.name} "
        f'VIRTAINER_INITRD=/guest/{tiny.initrd.name} VIRTAINER_CMDLINE="{TINY_CMDLINE}" '
        "VIRTAINER_WAIT_FOR=running,ip,ssh\n"
    )
    key = hashlib.sha256((context / "Dockerfile").read_bytes() + tiny.kernel.parent.name.encode()).hexdigest()[:12]
    tag = f"virtainer-test/manager-tiny:{key}"
    docker("build", "-q", "-t", tag, str(context), timeout=300)
    yield tag
    docker("rmi", tag, check=False)


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    directory = tmp_path_factory.mktemp("manager")
    with serving(directory, token="manager-" + secrets.token_hex(12), args=("--docker",)) as server:
        yield server


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A container name and a volume name; both removed at the end, whatever happened."""
    container, volume = unique("mgr"), unique("mgr-disk")
    yield container, volume
    docker("rm", "-f", container, check=False)
    docker("volume", "rm", "-f", volume, check=False)


def card(page: Any, name: str) -> Any:
    return page.locator(f'article[data-container="{name}"]')


def test_a_vm_container_made_in_the_page_runs_answers_stops_and_leaves_its_volume(
    manager: ApiServer, tiny_image: str, names: tuple[str, str]
) -> None:
    name, volume = names
    ssh_port = free_port()
    with chromium() as browser, logged_in_page(browser, manager.url, manager.token) as page:
        page.locator("#new-container summary").click()
        form = page.locator("#create-form")
        # a bad setting is refused with the API's message, nothing created
        form.locator("[name=name]").fill(name)
        form.locator("[name=image]").fill(tiny_image)
        form.locator("[name=ports]").fill("not-a-port")
        form.locator("button[type=submit]").click()
        expect(page.locator("#message")).to_contain_text("ports")
        assert docker("inspect", name, check=False).returncode != 0
        form.locator("[name=memory_mib]").fill("256")
        form.locator("[name=cpus]").fill("1")
        form.locator("[name=volume]").fill(volume)
        form.locator("[name=ports]").fill(f"127.0.0.1:{ssh_port}:22")
        form.locator("[name=ssh_key]").fill(FAKE_KEY)
        form.locator("button[type=submit]").click()
        vm_card = card(page, name)
        expect(vm_card.locator("[data-field=volume]")).to_have_text(volume)
        shot(page, "manager", "01-created")
        expect(vm_card.locator("[data-field=health]")).to_contain_text("healthy", timeout=180_000)
        expect(vm_card.locator("[data-field=readiness]")).to_have_text("ready")
        facts = f'{{{{json .HostConfig.CapAdd}}}} {{{{index .Config.Labels "{MANAGED_LABEL}"}}}} '
        facts += '{{(index (index .HostConfig.PortBindings "22/tcp") 0).HostPort}}'
        inspected = docker("inspect", "-f", facts, name)
        assert inspected.stdout.split() == ['["NET_ADMIN","SYS_ADMIN"]', "virtainer", str(ssh_port)]
        env = docker("inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", name).stdout.splitlines()
        assert {"RAM=256", "CPU=1", f"VIRTAINER_SSH_KEYS={FAKE_KEY}"} <= set(env)
        shot(page, "manager", "02-ready")

        vm_card.locator("button", has_text="Console").click()
        console_answers(page, "echo MANAGER-$((6*7))", "MANAGER-42")
        shot(page, "manager", "03-console")
        page.locator("#console-dialog .close").click()

        vm_card.locator("button", has_text="Stop").click()
        expect(vm_card.locator("[data-field=state]")).to_have_text("exited", timeout=120_000)
        shot(page, "manager", "04-stopped")
        vm_card.locator("button", has_text="Remove").click()
        expect(vm_card).to_have_count(0)
        expect(page.locator("#manager-note")).to_contain_text(f"volume {volume} is kept")
        shot(page, "manager", "05-removed")
    assert docker("inspect", name, check=False).returncode != 0
    kept = docker("volume", "inspect", "-f", '{{index .Labels "' + MANAGED_LABEL + '"}}', volume)
    assert kept.stdout.strip() == "virtainer"
    listing = docker("run", "--rm", "-v", f"{volume}:/v:ro", "--entrypoint", "ls", tiny_image, "/v", timeout=120)
    assert "local_image.qcow2" in listing.stdout  # the VM's diff is still on it


def test_a_manager_without_an_engine_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "VIRTAINER_API_TOKEN": "m" * 32}
    command = [*VIRTAINER, "serve", "--docker", "--port", str(free_port()), "--token-file", str(tmp_path / "t")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode != 0
    assert "the Docker engine does not answer" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_image_with_the_engine_s_socket_is_the_manager(generic_image: str) -> None:
    """RancherVM's way: the virtainer image run with the Docker socket, VIRTAINER_MANAGER=1."""
    token = "manager-" + secrets.token_hex(12)
    env = {"VIRTAINER_MANAGER": "1", "VIRTAINER_API_TOKEN": token}
    container = start(generic_image, "manager", env=env, volumes=["/var/run/docker.sock:/var/run/docker.sock"])
    try:
        container.wait_healthy(timeout_s=90)
        with httpx.Client(base_url=f"http://{container.ip}:{needs.API_PORT}", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
            assert client.get("/ui/session").json() == {"authenticated": True, "manager": True}
            listed = client.get("/v1/containers")
            assert listed.status_code == 200, listed.text
            assert container.name not in [item["name"] for item in listed.json()]  # itself: not a VM
            assert generic_image in client.get("/v1/containers/images").json()
            refused = client.post("/v1/containers", json={"name": "x", "image": "no/such:image"})
            assert refused.status_code == 404 and "no/such:image" in refused.json()["error"]["message"]
    finally:
        container.remove()
