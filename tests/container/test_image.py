"""The images: built locally from Debian packages (no registry), cached by content hash, lean,
with the metadata Docker users rely on; distro variants baked from a file or from a URL."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.conftest import tiny_options
from tests.container.docker import Build, build_image, docker, docker_host_address, start
from tests.guests import TinyGuest, cloud_guest

pytestmark = pytest.mark.container

URL_TEST_PORT = 47391  # fixed, so that the URL (part of the build's content key) is stable


class _Server(http.server.ThreadingHTTPServer):
    requests: list[str]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


def serve(directory: Path, address: str, port: int = 0) -> Iterator[_Server]:
    handler = functools.partial(_Handler, directory=str(directory))
    server = _Server((address, port), handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def image_file(image: str, path: str) -> str:
    return docker("run", "--rm", "--entrypoint", "cat", image, path).stdout


def test_images_build_from_debian_packages_and_are_cached(generic_build: Build) -> None:
    base = docker("image", "inspect", "-f", "{{.Id}}", "virtainer/base:bookworm").stdout.strip()
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}", base).stdout
    assert "Imported from -" in history  # made here by mmdebstrap | docker import
    # the session's build may be older than a source change: build, then build again at once
    first = build_image("generic")
    again = build_image("generic")
    print(f"\nTIMING image build: session {generic_build.seconds:.1f} s (cached={generic_build.cached}), "
          f"then {first.seconds:.1f} s, then {again.seconds:.1f} s")  # fmt: skip
    assert again.cached and again.tag == first.tag
    assert again.seconds < 30


def test_image_metadata(generic_image: str) -> None:
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", generic_image).stdout)
    assert config["Entrypoint"][:3] == ["/usr/bin/tini", "-s", "--"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["Healthcheck"]["Test"] == ["CMD", "/usr/local/bin/virtainer-healthcheck"]
    assert "/mounted" in config["Volumes"]
    assert "LIBVIRT_DEFAULT_URI=qemu:///system" in config["Env"]
    assert config["Labels"]["org.opencontainers.image.title"] == "virtainer/generic"
    assert config["Labels"]["dev.virtainer.variant"] == "generic"


def test_image_is_lean(generic_image: str) -> None:
    script = (
        "ls /var/lib/apt/lists | grep -v '^lock$' | grep -v '^partial$' | wc -l; "
        "ls /usr/share/doc | wc -l; "
        "for p in systemd polkitd dbus libvirt-daemon-system qemu-system-gui; do "
        "dpkg-query -W -f='${Status}\\n' $p 2>/dev/null | grep -q 'ok installed' && echo $p; done; "
        "for p in ovmf swtpm swtpm-tools; do "
        "dpkg-query -W -f='${Status}\\n' $p 2>/dev/null | grep -q 'ok installed' || echo missing-$p; done; true"
    )
    lines = docker("run", "--rm", "--entrypoint", "sh", generic_image, "-c", script).stdout.split()
    assert lines[:2] == ["0", "0"], lines  # no apt lists, no docs
    # lean, yet carrying what its own settings need: OVMF (firmware=uefi, SupraVM's default), swtpm
    assert lines[2:] == [], f"packages a lean image must not carry, or must: {lines[2:]}"
    size_mib = int(docker("image", "inspect", "-f", "{{.Size}}", generic_image).stdout) / 2**20
    print(f"\nSIZE generic image {size_mib:.0f} MiB")
    assert size_mib < 500


def test_debian_variant_bakes_the_test_cloud_image(debian_image: str) -> None:
    record = json.loads(image_file(debian_image, "/var/lib/virtainer/images/image.json"))
    assert record["sha256"] == sha256(cloud_guest().base_image)
    assert record["os_variant"] == "debian12" and record["variant"] == "debian"
    # hashed at build time: a container start finds the identity in the cache
    assert record["sha256"] in image_file(debian_image, "/var/cache/virtainer/identities.json")


@pytest.fixture(scope="module")
def cloud_image_server() -> Iterator[_Server]:
    yield from serve(cloud_guest().base_image.parent, "127.0.0.1", URL_TEST_PORT)


def test_debian_variant_from_a_url(cloud_image_server: _Server) -> None:
    guest = cloud_guest().base_image
    url = f"http://127.0.0.1:{URL_TEST_PORT}/{guest.name}"
    digest = sha256(guest)
    env = {"IMAGE_URL": url, "IMAGE_SHA256": digest, "TAG_SUFFIX": "-urltest"}
    built = build_image("debian", env)  # Docker's layer cache may serve the download step
    record = json.loads(image_file(built.tag, "/var/lib/virtainer/images/image.json"))
    assert record["source"] == url and record["sha256"] == digest

    # a wrong checksum is refused at build time (a failed step is never cached: it downloads)
    cloud_image_server.requests.clear()
    with pytest.raises(AssertionError, match="refused"):
        build_image("debian", {**env, "IMAGE_SHA256": "0" * 64})
    assert f"/{guest.name}" in cloud_image_server.requests


def test_generic_image_downloads_image_url_at_run_time(generic_image: str, tiny: TinyGuest, volume: Path) -> None:
    """`IMAGE_URL` (+ sha256) at `docker run`: downloaded by the controller, verified, booted."""
    gateway = docker_host_address()
    for server in serve(tiny.base_image.parent, gateway):
        options = tiny_options(tiny, volume, VIRTAINER_NETWORK="none")
        env = dict(options["env"])  # type: ignore[call-overload]
        del env["IMAGE"]
        env["IMAGE_URL"] = f"http://{gateway}:{server.server_address[1]}/{tiny.base_image.name}"
        env["IMAGE_SHA256"] = sha256(tiny.base_image)
        container = start(generic_image, "url", env=env, volumes=options["volumes"])  # type: ignore[arg-type]
        try:
            container.wait_log(r"GUEST-READY", timeout_s=120)
            assert f"/{tiny.base_image.name}" in server.requests
            container.stop(timeout_s=30)
            assert container.exit_code() == 0
        finally:
            container.remove()
