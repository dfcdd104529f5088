"""SupraVM's documented usage, typed as its README has it, on the real image and the real Debian
cloud guest:

    docker run -d --init -e SUPRA_APPS=linux -e VM_STORAGE_ID=ID -e VM_CPU_CORES=2 -e VM_RAM=1G \\
      -v DIR:/opt/vm/linux/ID virtainer/generic

with `--cap-add NET_ADMIN --cap-add SYS_ADMIN` where the README has `--device /dev/kvm` (these
machines run guests under TCG, and cannot start --privileged). SupraVM's layout defaults to UEFI
on q35: the image must carry OVMF (and swtpm for VIRTAINER_TPM=emulated). With BIOS the Debian
cloud guest boots and must find its cloud-init seed: on q35 a SATA cdrom is invisible to
Debian's cloud kernel (no AHCI), so the seed is a read-only virtio disk; the guest then has the
mounted SSH key. One cloud boot for the module.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.conftest import new_volume
from tests.container.docker import NETWORK_CAPS, Container, docker, start
from tests.guests import cloud_guest
from tests.ssh import SshKey, make_key
from tests.waiting import wait_until

pytestmark = pytest.mark.container
STORAGE_ID = "vt-supra"
BOOT_TIMEOUT_S = 400


def supravm_env(**extra: str) -> dict[str, str]:
    """The README's variables, as its users set them."""
    return {"SUPRA_APPS": "linux", "VM_STORAGE_ID": STORAGE_ID, "VM_CPU_CORES": "2", "VM_RAM": "1G", **extra}


def supravm_volume(directory: Path) -> str:
    return f"{directory}:/opt/vm/linux/{STORAGE_ID}"


def test_default_uefi_and_an_emulated_tpm_start_in_the_image(generic_image: str) -> None:
    """UEFI (the layout's default) and tpm=emulated: the domain starts with OVMF and swtpm
    (it stopped at once before: "OVMF, which uefi needs, is not installed")."""
    store = new_volume("supravm-uefi")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(store / "sys.qcow2"), "64M"], check=True)
    container = start(generic_image, "supra-uefi", caps=NETWORK_CAPS, extra=["--init"],
                      env=supravm_env(VIRTAINER_TPM="emulated", VIRTAINER_STOP_TIMEOUT="5"),
                      volumes=[supravm_volume(store)])  # fmt: skip
    try:
        container.wait_log(r"domain 'vm' started", timeout_s=120)
        xml = container.exec("virsh", "-q", "dumpxml", "vm").stdout
        assert "OVMF" in xml and 'type="pflash"' in xml.replace("'", '"'), xml
        assert "<tpm " in xml and 'type="emulator"' in xml.replace("'", '"'), xml
        swtpm = container.exec("sh", "-c", "cat /proc/[0-9]*/comm | grep -x swtpm")
        assert swtpm.returncode == 0, container.logs()[-2000:]  # the TPM emulator runs beside QEMU
        assert (store / "sys.qcow2.nvram.fd").is_file()  # SupraVM's UEFI variables live beside sys.qcow2
    finally:
        container.remove()
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="module")
def bios_vm(generic_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Container, SshKey]]:
    files = tmp_path_factory.mktemp("supravm-files")
    files.chmod(0o755)
    key = make_key(files)
    store = new_volume("supravm-bios")
    shutil.copyfile(cloud_guest().base_image, store / "sys.qcow2")  # a standalone system disk
    (store / "sys.qcow2").chmod(0o644)
    # the README's network and display variables too (its RDP port rule becomes SSH's here)
    env = supravm_env(VM_GUEST_LAN="192.168.199.0/24", VM_MAC="00:00:00:01:02:03",
                      VM_TCP_PORTS='("0.0.0.0:22:22")', VM_GUEST_VNC="1", VIRTAINER_FIRMWARE="bios")
    container = start(generic_image, "supra-bios", caps=NETWORK_CAPS, extra=["--init"], env=env,
                      volumes=[supravm_volume(store), f"{key.public}:/tmp/id_rsa.pub:ro"])  # fmt: skip
    try:
        container.wait_log(r"VM 'vm' is ready", timeout_s=BOOT_TIMEOUT_S)
        yield container, key
    finally:
        container.remove()
        shutil.rmtree(store, ignore_errors=True)


def test_bios_guest_on_q35_gets_the_ssh_key(bios_vm: tuple[Container, SshKey]) -> None:
    container, key = bios_vm
    target = f"debian@{container.ip}"

    def logged_in() -> bool:
        return key.run(target, "true", timeout=30).returncode == 0

    wait_until(logged_in, BOOT_TIMEOUT_S, "SSH with the mounted key into SupraVM's BIOS guest", interval_s=3)
    done = key.run(target, "cat ~/.ssh/authorized_keys; readlink -f /dev/disk/by-id/virtio-cidata")
    assert done.returncode == 0, done.stderr
    assert key.public.read_text().split()[1] in done.stdout  # the mounted key reached the guest
    assert "/dev/vd" in done.stdout  # the seed: a virtio disk, found by its cidata label
    address = key.run(target, "ip -4 -o addr show scope global").stdout
    assert " 192.168.199.2/24 " in address, address  # VM_GUEST_LAN: the guest's fixed address in it


def test_the_seed_is_a_read_only_virtio_disk_on_q35(bios_vm: tuple[Container, SshKey]) -> None:
    container, _key = bios_vm
    xml = container.exec("virsh", "-q", "dumpxml", "vm").stdout.replace("'", '"')
    assert 'machine="pc-q35' in xml
    assert 'port="5999"' in xml and "00:00:00:01:02:03" in xml  # VM_GUEST_VNC=1, VM_MAC
    seed = xml[xml.index("seed.iso") - 200 : xml.index("seed.iso") + 200]
    assert 'bus="virtio"' in seed and "<readonly/>" in seed and 'device="disk"' in seed, seed
    assert docker("inspect", "-f", "{{.State.Running}}", container.name).stdout.strip() == "true"
