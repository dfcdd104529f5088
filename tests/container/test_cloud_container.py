"""The real Debian 12 cloud guest in `virtainer/debian`: SSH, published ports, user-data, and a
diff that persists across containers and travels to a teammate.

The cloud guest boots once for the module (about 80-100 s under TCG); the assertions share it.
The last test replaces that container on the same volume, then starts a teammate's copy.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser import chromium, console_answers, logged_in_page, shot
from tests.container.conftest import new_volume
from tests.container.docker import NETWORK_CAPS, Container, docker, start
from tests.ssh import SshKey, make_key
from virtainer.api.defaults import DEFAULT_TOKEN_FILE
from virtainer.orchestration import needs

pytestmark = [pytest.mark.container, pytest.mark.cloud]

BOOT_TIMEOUT_S = 400
STOP_TIMEOUT_S = 120
WEB_PORT = 8000
USER_DATA = f"""#cloud-config
write_files:
  - path: /srv/www/index.html
    content: "virtainer-published-port\\n"
runcmd:
  - [sh, -c, "echo first-boot >> /var/lib/vt-first-boot"]
  - [systemd-run, --unit=vt-web, python3, -m, http.server, "{WEB_PORT}", --directory, /srv/www]
"""


@dataclass
class CloudVm:
    container: Container
    image: str
    key: SshKey
    files: Path  # key and user-data, mounted read-only
    volume: Path

    def ssh(self, command: str, container: Container | None = None) -> str:
        target = f"debian@{(container or self.container).ip}"
        done = self.key.run(target, command)
        assert done.returncode == 0, f"ssh {target} {command!r}: {done.returncode} {done.stderr}"
        return done.stdout

    def start(self, volume: Path, prefix: str) -> Container:
        return start(
            self.image,
            prefix,
            caps=NETWORK_CAPS,
            env={"RAM": "1024", "CPU": "2", "VIRTAINER_STOP_TIMEOUT": str(STOP_TIMEOUT_S - 20)},
            volumes=[
                f"{self.key.public}:/tmp/id_rsa.pub:ro",
                f"{self.files / 'user-data'}:/tmp/user-data:ro",
                f"{volume}:/mounted",
            ],
            publish=[f"127.0.0.1::{WEB_PORT}"],
        )


@pytest.fixture(scope="module")
def cloud_vm(debian_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudVm]:
    files = tmp_path_factory.mktemp("cloud-files")
    files.chmod(0o755)
    key = make_key(files)
    (files / "user-data").write_text(USER_DATA)
    volume = new_volume("cloud")
    vm = CloudVm(Container("unset"), debian_image, key, files, volume)
    vm.container = vm.start(volume, "cloud")
    try:
        seconds = vm.container.wait_healthy(timeout_s=BOOT_TIMEOUT_S)
        print(f"\nTIMING cloud container healthy {seconds:.1f} s after docker run")
        yield vm
    finally:
        vm.container.remove()
        shutil.rmtree(volume, ignore_errors=True)


def test_ssh_to_the_container_address_with_the_mounted_key(cloud_vm: CloudVm) -> None:
    assert cloud_vm.ssh("id -un").strip() == "debian"
    logs = cloud_vm.container.logs()
    for stage in ("running", "ip", "agent", "cloud-init", "ssh"):
        assert f"] stage {stage}" in logs, logs[-3000:]
    assert "cloud-init" in logs.split("domain 'vm' started", 1)[1]  # the guest's serial console


def test_the_guest_sees_the_real_client_address(cloud_vm: CloudVm) -> None:
    """Inbound traffic is not source-NATed: sshd sees the host's address on the Docker bridge."""
    client = cloud_vm.ssh("echo $SSH_CLIENT").split()[0]
    assert client == cloud_vm.container.gateway


def test_user_data_takes_effect(cloud_vm: CloudVm) -> None:
    assert cloud_vm.ssh("cat /var/lib/vt-first-boot").split() == ["first-boot"]
    assert cloud_vm.ssh("cat /srv/www/index.html").strip() == "virtainer-published-port"


def test_published_port_reaches_the_guest(cloud_vm: CloudVm) -> None:
    host_port = docker("port", cloud_vm.container.name, f"{WEB_PORT}/tcp").stdout.split(":")[-1].strip()
    cloud_vm.ssh(f"for i in $(seq 60); do ss -ltn | grep -q ':{WEB_PORT} ' && break; sleep 1; done")
    with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=10) as response:
        assert response.read().decode().strip() == "virtainer-published-port"


def test_outbound_traffic_is_masqueraded(cloud_vm: CloudVm) -> None:
    """The guest, on its private LAN, reaches a listener outside the container (on the Docker
    host's bridge address) and arrives there with the container's address."""
    with socket.create_server((cloud_vm.container.gateway, 0)) as server:
        server.settimeout(30)
        port = server.getsockname()[1]
        cloud_vm.ssh(f"timeout 10 bash -c 'echo from-the-guest > /dev/tcp/{cloud_vm.container.gateway}/{port}'")
        connection, (peer, _port) = server.accept()
        with connection:
            connection.settimeout(10)
            assert connection.recv(64).strip() == b"from-the-guest"
    assert peer == cloud_vm.container.ip


def test_the_container_s_own_page_shows_the_login_prompt_on_its_console(cloud_vm: CloudVm) -> None:
    """The web UI served from inside the real container (its API's port), in a real browser."""
    expect = pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra").expect
    token = cloud_vm.container.exec("cat", str(DEFAULT_TOKEN_FILE)).stdout.strip()
    assert token, "the container generated no API token"
    url = f"http://{cloud_vm.container.ip}:{needs.API_PORT}"
    with chromium() as browser, logged_in_page(browser, url, token) as page:
        vm_card = page.locator('article[data-vm="vm"]')
        expect(vm_card.locator("[data-field=state]")).to_have_text("running")
        vm_card.locator("button", has_text="Console").click()
        console_answers(page, "", "login:")  # Enter: getty prints its prompt again
        shot(page, "cloud-container", "console-login")


def test_diff_persists_and_travels_to_a_teammate(cloud_vm: CloudVm) -> None:
    token = uuid.uuid4().hex
    cloud_vm.ssh(f"echo {token} > ~/persist.txt && sync")

    seconds = cloud_vm.container.stop(timeout_s=STOP_TIMEOUT_S)
    print(f"\nTIMING cloud docker stop {seconds:.1f} s")
    assert cloud_vm.container.exit_code() == 0, cloud_vm.container.logs()[-2000:]
    assert "the guest powered off (guest agent" in cloud_vm.container.logs()
    cloud_vm.container.remove()

    # a new container on the same volume: same disk, first boot not run again
    second = cloud_vm.start(cloud_vm.volume, "cloud-again")
    try:
        second.wait_healthy(timeout_s=BOOT_TIMEOUT_S)
        assert cloud_vm.ssh("cat ~/persist.txt", second).strip() == token
        assert cloud_vm.ssh("cat /var/lib/vt-first-boot", second).split() == ["first-boot"]
        assert "reusing diff /mounted/local_image.qcow2" in second.logs()
        second.stop(timeout_s=STOP_TIMEOUT_S)
        assert second.exit_code() == 0
    finally:
        second.remove()

    # a teammate receives a copy of the diff (and its base record) in a volume of their own
    teammate_volume = new_volume("teammate")
    try:
        for name in ("local_image.qcow2", "local_image.qcow2.base.json"):
            subprocess.run(
                ["cp", "--sparse=always", str(cloud_vm.volume / name), str(teammate_volume / name)], check=True
            )
        teammate = cloud_vm.start(teammate_volume, "teammate")
        try:
            teammate.wait_healthy(timeout_s=BOOT_TIMEOUT_S)
            assert cloud_vm.ssh("cat ~/persist.txt", teammate).strip() == token
            assert cloud_vm.ssh("cat /var/lib/vt-first-boot", teammate).split() == ["first-boot"]
        finally:
            teammate.remove()
    finally:
        shutil.rmtree(teammate_volume, ignore_errors=True)
