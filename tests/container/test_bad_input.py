"""Bad input at container start: one line on stderr naming the problem, a non-zero exit status,
and the volume exactly as it was (here it holds a diff made earlier on the tiny guest's base)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.container.conftest import GUEST_MOUNT, new_volume, tiny_options
from tests.container.docker import NETWORK_CAPS, run_to_end
from tests.guests import TinyGuest

pytestmark = pytest.mark.container

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


@dataclass(frozen=True)
class Case:
    id: str
    expect: str  # a piece of the one error line
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)  # mount point -> content (None: a directory)
    caps: tuple[str, ...] = NETWORK_CAPS
    exit_code: int = 2
    network: str = "none"
    read_only_volume: bool = False  # the diff's volume mounted :ro


CASES = [
    Case("ram-not-a-size", "RAM='lots'", {"RAM": "lots"}),
    Case("ram-too-small", "RAM='1'", {"RAM": "1"}),
    Case("cpu-zero", "CPU='0'", {"CPU": "0"}),
    Case("cpu-not-a-number", "CPU='two'", {"CPU": "two"}),
    Case("disk-size-unit", "DISK_SIZE='10X'", {"DISK_SIZE": "10X"}),
    Case("disk-size-too-big", "DISK_SIZE='100T'", {"DISK_SIZE": "100T"}),
    Case("unknown-os-variant", "OS_VARIANT='windows95'", {"OS_VARIANT": "windows95"}),
    Case("vm-name", "VM_NAME='bad name!'", {"VM_NAME": "bad name!"}),
    Case("missing-image", f"IMAGE='{GUEST_MOUNT}/nope.qcow2'", {"IMAGE": f"{GUEST_MOUNT}/nope.qcow2"}),
    Case("image-url-scheme", "IMAGE_URL='ftp://example.invalid/x.img'", {"IMAGE_URL": "ftp://example.invalid/x.img"}),
    Case("image-and-url", "not both", {"IMAGE_URL": "http://127.0.0.1:9/x.img"}),
    Case("multicast-mac", "VM_MAC='01:00:5e:00:00:01'", {"VM_MAC": "01:00:5e:00:00:01"}),
    Case("network-kind", "VIRTAINER_NETWORK='bogus'", {"VIRTAINER_NETWORK": "bogus"}),
    Case("stop-timeout", "VIRTAINER_STOP_TIMEOUT='-5'", {"VIRTAINER_STOP_TIMEOUT": "-5"}),
    Case("controller-ports", "VIRTAINER_CONTROLLER_PORTS", {"VIRTAINER_CONTROLLER_PORTS": "http"}),
    Case("key-is-a-directory", "/tmp/id_rsa.pub", files={"/tmp/id_rsa.pub": None}),
    Case("key-is-private", "/tmp/id_rsa.pub", files={"/tmp/id_rsa.pub": PRIVATE_KEY}),
    Case("key-file-empty", "/tmp/id_rsa.pub", files={"/tmp/id_rsa.pub": ""}),
    Case("user-data-bad-yaml", "/tmp/user-data", files={"/tmp/user-data": "#cloud-config\nusers: [unclosed\n"}),
    Case("user-data-unknown-kind", "/tmp/user-data", files={"/tmp/user-data": "hello, VM\n"}),
    Case("seed-iso-not-an-iso", "/tmp/cloud_init.iso", files={"/tmp/cloud_init.iso": "not an ISO image\n"}),
    Case("kvm-forced-without-kvm", "accelerator=kvm", {"VIRTAINER_ACCELERATOR": "kvm"}, exit_code=1),
    Case("nic-without-sys-admin", "--cap-add SYS_ADMIN", caps=("NET_ADMIN",), network="default"),
    # network control (issue 5): every new setting, canonical and SupraVM's names
    Case("ports-range-lengths", "VIRTAINER_PORTS='tcp:80:81-82'", {"VIRTAINER_PORTS": "tcp:80:81-82"},
         network="default"),
    Case("ports-protocol", "VIRTAINER_PORTS='sctp:80'", {"VIRTAINER_PORTS": "sctp:80"}, network="default"),
    Case("ports-twice", "each incoming tcp port in one rule only", {"VIRTAINER_PORTS": "tcp:80 tcp:70-90:70-90"},
         network="default"),
    Case("supravm-ports-fields", "VM_TCP_PORTS=", {"VM_TCP_PORTS": '("0.0.0.0:3389")'}, network="default"),
    Case("supravm-ports-number", "VM_TCP_PORTS=", {"VM_TCP_PORTS": '("0.0.0.0:3389:70000")'}, network="default"),
    Case("ports-take-the-api-port", "tcp/8470 (REST API)", {"VM_TCP_PORTS": '("0.0.0.0:80:8470")'},
         network="default"),
    Case("ports-target-outside-lan", "inside the guest LAN 192.168.199.0/24",
         {"VIRTAINER_PORTS": "tcp:2222:10.1.1.1:22", "VM_GUEST_LAN": "192.168.199.0/24"}, network="default"),
    Case("ports-without-a-nic", "VIRTAINER_PORTS='tcp:22'", {"VIRTAINER_PORTS": "tcp:22"}),
    Case("forward-to-loopback", "VIRTAINER_GUEST_FORWARDS='tcp:10.0.0.1:80:127.0.0.1:80'",
         {"VIRTAINER_GUEST_FORWARDS": "tcp:10.0.0.1:80:127.0.0.1:80"}, network="default"),
    Case("supravm-forward-fields", "VM_GUEST_TCP_FWDS=", {"VM_GUEST_TCP_FWDS": '("1.2.3.4:80")'},
         network="default"),
    Case("forward-without-net-admin", "VM_GUEST_TCP_FWDS needs the NET_ADMIN capability",
         {"VM_GUEST_TCP_FWDS": '("1.2.3.4:80:172.17.0.1:80")'}, caps=(), network="default"),
    Case("restrict-without-net-admin", "VM_GUEST_RESTRICT needs the NET_ADMIN capability",
         {"VM_GUEST_RESTRICT": "1"}, caps=(), network="default"),
    # the guest would reach QEMU's VNC server from inside the container: refused unless accepted
    Case("vnc-without-net-admin", "VM_GUEST_VNC with user-mode networking would let the guest reach",
         {"VM_GUEST_VNC": "1"}, caps=(), network="default"),
    Case("restrict-not-a-flag", "VM_GUEST_RESTRICT='maybe'", {"VM_GUEST_RESTRICT": "maybe"}, network="default"),
    Case("lan-too-small", "VM_GUEST_LAN='192.168.1.0/30'", {"VM_GUEST_LAN": "192.168.1.0/30"}, network="default"),
    Case("lan-not-a-network", "VM_GUEST_LAN='lan'", {"VM_GUEST_LAN": "lan"}, network="default"),
    Case("lan-on-a-container-route", "VM_GUEST_LAN='172.17.0.0/24'", {"VM_GUEST_LAN": "172.17.0.0/24"},
         network="default"),
    Case("reserved-ports", "VIRTAINER_RESERVED_PORTS='http'", {"VIRTAINER_RESERVED_PORTS": "http"}),
    # one line, never a traceback (issue 8): Unicode digits, two names of one setting, nan, reserved LANs
    Case("ram-unicode-digit", "RAM='²'", {"RAM": "²"}),
    Case("ram-under-two-names", "VM_RAM='2G': the same setting as RAM='1024'", {"RAM": "1024", "VM_RAM": "2G"}),
    Case("boot-timeout-nan", "VIRTAINER_BOOT_TIMEOUT='nan'", {"VIRTAINER_BOOT_TIMEOUT": "nan"}),
    Case("lan-reserved", "VM_GUEST_LAN='240.0.0.0/24'", {"VM_GUEST_LAN": "240.0.0.0/24"}, network="default"),
    Case("read-only-volume", "is on a read-only file system", read_only_volume=True),
    # the REST API's settings, checked before the VM starts (not only once it runs)
    Case("api-token-placeholder", "VIRTAINER_API_TOKEN='***'", {"VIRTAINER_API_TOKEN": "changeme"}),
    Case("api-listen-not-an-address", "VIRTAINER_API_LISTEN='everywhere'", {"VIRTAINER_API_LISTEN": "everywhere"}),
    Case("api-listen-not-ours", "VIRTAINER_API_LISTEN='10.255.255.1'", {"VIRTAINER_API_LISTEN": "10.255.255.1"}),
    Case("api-public-reads", "VIRTAINER_API_PUBLIC_READS='maybe'", {"VIRTAINER_API_PUBLIC_READS": "maybe"}),
]


def fingerprint(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() + f" {path.stat().st_mtime_ns}"
        for path in sorted(directory.iterdir())
    }


@pytest.fixture(scope="module")
def used_volume(generic_image: str, tiny: TinyGuest) -> Iterator[Path]:
    """A volume holding a diff (and its base record) from a short run of the tiny guest."""
    volume = new_volume("bad-input")
    subprocess.run(
        ["docker", "run", "--rm", *_args_for_first_boot(tiny, volume), generic_image],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    yield volume
    shutil.rmtree(volume, ignore_errors=True)


def _args_for_first_boot(tiny: TinyGuest, volume: Path) -> list[str]:
    """The tiny guest with `guestmode=hello`: it boots and powers itself off, ending the container."""
    options = tiny_options(tiny, volume, VIRTAINER_NETWORK="none")
    env = dict(options["env"])  # type: ignore[call-overload]
    env["VIRTAINER_CMDLINE"] = "console=ttyS0 guestmode=hello"
    args: list[str] = []
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    for mount in options["volumes"]:  # type: ignore[attr-defined]
        args += ["-v", mount]
    return args


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_with_one_line(
    case: Case, generic_image: str, tiny: TinyGuest, used_volume: Path, tmp_path: Path
) -> None:
    before = fingerprint(used_volume)
    options = tiny_options(tiny, used_volume, **{"VIRTAINER_NETWORK": case.network, **case.env})
    if case.id == "image-and-url":
        pass  # IMAGE (from tiny_options) and IMAGE_URL together
    elif "IMAGE_URL" in case.env:
        del options["env"]["IMAGE"]  # type: ignore[attr-defined]
    volumes = list(options["volumes"])  # type: ignore[call-overload]
    if case.read_only_volume:
        volumes = [f"{volume}:ro" if volume.endswith(":/mounted") else volume for volume in volumes]
    for mount_point, content in case.files.items():
        source = tmp_path / Path(mount_point).name
        if content is None:
            source.mkdir()
        else:
            source.write_text(content)
        volumes.append(f"{source}:{mount_point}:ro")
    options["volumes"] = volumes
    done = run_to_end(generic_image, caps=case.caps, **options)  # type: ignore[arg-type]

    errors = done.stderr.strip().splitlines()
    assert done.returncode == case.exit_code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert len(errors) == 1, f"expected one error line, got:\n{done.stderr}"
    assert errors[0].startswith("virtainer: error: "), errors[0]
    assert case.expect in errors[0], errors[0]
    assert fingerprint(used_volume) == before


def test_generic_image_without_any_image_names_the_settings(generic_image: str, volume: Path) -> None:
    done = run_to_end(generic_image, env={"VIRTAINER_NETWORK": "none"}, volumes=[f"{volume}:/mounted"])
    errors = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "VIRTAINER_IMAGE" in errors[0] and "VIRTAINER_IMAGE_URL" in errors[0]
    assert list(volume.iterdir()) == []


def test_diff_from_a_different_base_is_refused_unchanged(
    generic_image: str, tiny: TinyGuest, used_volume: Path, tmp_path: Path
) -> None:
    """A teammate's diff offered on another base: refused, naming both bases; nothing changed."""
    other = tmp_path / "other-base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(other), "64M"], check=True)
    other.chmod(0o444)
    before = fingerprint(used_volume)
    options = tiny_options(tiny, used_volume, VIRTAINER_NETWORK="none", IMAGE="/other/other-base.qcow2")
    options["volumes"] = [*options["volumes"], f"{tmp_path}:/other:ro"]  # type: ignore[misc]
    done = run_to_end(generic_image, **options)  # type: ignore[arg-type]
    errors = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(errors) == 1, done.stdout + done.stderr
    assert "was made on base sha256" in errors[0] and "the base offered now is sha256" in errors[0]
    assert fingerprint(used_volume) == before
