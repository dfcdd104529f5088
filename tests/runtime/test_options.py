"""RunCVM's options and the accelerator, on the real engine: RUNCVM_DISKS (created, formatted, filled
from the image, mounted in the VM, kept in a volume), RUNCVM_DISPLAY_MODE=vnc with RUNCVM_QEMU_VGA
and RUNCVM_QEMU_VNC_DISPLAY (a VNC server a viewer reaches through -p), one VM for all of it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.container.docker import docker
from tests.runtime.common import VM_TIMEOUT_S, removed_after, run, unique
from tests.vnc import rfb_desktop
from tests.waiting import wait_until

pytestmark = pytest.mark.runtime
DISKS = "/disks/dpkg,/var/lib/dpkg,ext4,64M;/disks/bare,16M"


def exec_in(name: str, script: str) -> subprocess.CompletedProcess[str]:
    return docker("exec", name, "sh", "-c", script, check=False, timeout=VM_TIMEOUT_S)


def _desktop(port: str) -> tuple[bytes, int, int] | None:
    try:
        return rfb_desktop(int(port))
    except OSError:
        return None


def test_runcvm_disks_and_vnc_display_in_one_vm(runtime: str, images: dict[str, str]) -> None:
    volume = unique("disks")
    with removed_after(unique("opts")) as name:
        try:
            docker("run", "-d", f"--runtime={runtime}", "--name", name, "-p", "127.0.0.1::5901",
                   "--mount", f"type=volume,src={volume},dst=/disks", "-e", f"RUNCVM_DISKS={DISKS}",
                   "-e", "RUNCVM_DISPLAY_MODE=vnc", "-e", "RUNCVM_QEMU_VNC_DISPLAY=1", "-e", "RUNCVM_QEMU_VGA=std",
                   "-e", "RUNCVM_KERNEL_DEBUG=1", images["debian"], "sleep", "600")  # fmt: skip
            wait_until(lambda: exec_in(name, "true").returncode == 0, VM_TIMEOUT_S, "docker exec to answer")

            # the disk is mounted where RUNCVM_DISKS says, filled from the image's directory
            mounts = exec_in(name, "grep ' /var/lib/dpkg ' /proc/mounts; test -s /var/lib/dpkg/status && echo filled")
            assert re.fullmatch(r"/dev/vd[a-p] /var/lib/dpkg ext4 rw\S* 0 0\nfilled\n", mounts.stdout), mounts
            # the one without a filesystem: a bare 16 MiB block device (512-byte sectors)
            sizes = exec_in(name, "for d in /sys/block/vd*; do cat $d/size; done").stdout.split()
            assert sorted(sizes) == ["131072", "32768"]
            done = exec_in(name, "echo written-in-the-vm > /var/lib/dpkg/marker && sync")
            assert done.returncode == 0, done.stderr

            # VNC: RunCVM's display 1, through -p, the VGA adapter asked for
            port = docker("port", name, "5901/tcp").stdout.strip().rsplit(":", 1)[1]
            version, width, height = wait_until(lambda: _desktop(port), VM_TIMEOUT_S, "the VNC server through -p")
            assert version == b"RFB 003.008\n" and width > 0 and height > 0
            xml_video = exec_in(name, "cat /proc/cmdline").stdout
            assert "console=tty0" in xml_video  # the guest's console is on the display too

            # the accelerator: said in the debug log, and QEMU's own command line in docker top
            logs = docker("logs", name).stderr
            said = re.search(r"virtainer: accelerator (kvm|tcg): ", logs)
            assert said, logs[-2000:]
            top = docker("top", name, "-eo", "pid,args").stdout
            assert f"accel={said.group(1)}" in top or f"-accel {said.group(1)}" in top, top

            docker("stop", "-t", "5", name, timeout=VM_TIMEOUT_S)
            # the disk lives in the volume, with what the VM wrote, formatted once
            source = Path(docker("volume", "inspect", "-f", "{{.Mountpoint}}", volume).stdout.strip()) / "dpkg"
            marker = subprocess.run(["debugfs", "-R", "cat /marker", str(source)], capture_output=True, text=True)
            assert marker.stdout == "written-in-the-vm\n", marker.stderr
        finally:
            docker("rm", "-f", name, check=False)
            docker("volume", "rm", volume, check=False)


def test_bad_runcvm_values_are_one_line_naming_the_setting(runtime: str, images: dict[str, str]) -> None:
    cases = {
        "RUNCVM_QEMU_VGA=qxl": "invalid RUNCVM_QEMU_VGA='qxl': one of virtio, vga, cirrus, bochs, none",
        "RUNCVM_DISPLAY_MODE=x11": "invalid RUNCVM_DISPLAY_MODE='x11': headless, serial or vnc",
        "RUNCVM_DISKS=/d,/srv,xfs,1G": "invalid RUNCVM_DISKS='/d,/srv,xfs,1G': PATH,MOUNT,FS[,SIZE] with FS one of",
        # found missing only when the VM starts (the path may be on a volume): still one line, 125
        "RUNCVM_DISKS=/absent,/srv,ext4": "invalid RUNCVM_DISKS='/absent': an existing file, or give a SIZE",
    }
    for env, message in cases.items():
        done = run("-e", env, images["busybox"], "true", runtime=runtime)
        lines = [line for line in done.stderr.splitlines() if "RUNCVM_" in line]
        assert done.returncode != 0 and len(lines) == 1 and message in lines[0], (env, done.stderr)
