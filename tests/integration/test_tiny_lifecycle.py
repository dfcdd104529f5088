"""The lifecycle on a real guest: the tiny kernel+busybox guest under a real libvirtd and QEMU.

Through the `virtainer` command as users type it, and through the library for the console path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pexpect
import pytest

from tests.guests import TinyGuest, tiny_guest
from tests.tiny_cli import VIRTAINER, serial_log, tiny_up_args, virtainer
from tests.waiting import wait_until
from virtainer.hypervisor import Hypervisor

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def tiny() -> TinyGuest:
    return tiny_guest()


def up_args(tiny: TinyGuest, name: str, vm_dir: Path, *extra: str, base: Path | None = None) -> list[str]:
    args = tiny_up_args(tiny, name, vm_dir, *extra)
    args[2:2] = ["--image", str(base or tiny.base_image), "--diff", str(vm_dir / "diff.qcow2")]
    return args


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_up_console_status_down_destroy(tiny: TinyGuest, vm_dir: Path, domain_name: str) -> None:
    base_before = sha256(tiny.base_image)
    done = virtainer(*up_args(tiny, domain_name, vm_dir))
    assert "accelerator: tcg" in done.stdout or "accelerator: kvm" in done.stdout
    wait_until(lambda: "GUEST-READY" in serial_log(vm_dir), 60, "the guest's ready line in the serial log")

    # the console path (what `virsh console` attaches to): a real shell answers
    with Hypervisor() as hv, hv.console(domain_name) as console:
        console.write(b"\recho ANSWER-$((6*7))\r")
        seen = bytearray()
        wait_until(lambda: seen.extend(console.read(0.5)) or b"ANSWER-42" in seen, 30, "the shell's answer")

    status = json.loads(virtainer("status", domain_name, "--json").stdout)
    assert status["state"] == "running"
    assert status["accelerator"] in ("tcg", "kvm") and status["accelerator_reason"]
    assert status["diff"]["path"] == str(vm_dir / "diff.qcow2")
    assert status["diff"]["base"]["sha256"] == base_before

    down = virtainer("down", domain_name, "--timeout", "60")
    assert "ACPI power button" in down.stdout  # graceful: the tiny guest has no agent
    assert "GUEST-ACPI-POWER-BUTTON" in serial_log(vm_dir)
    assert json.loads(virtainer("status", domain_name, "--json").stdout)["state"] == "shut-off"
    again = virtainer("down", domain_name, check=False)  # as the API's stop: a conflict, exit 4
    assert again.returncode == 4 and "it is shut-off" in again.stderr

    virtainer(*up_args(tiny, domain_name, vm_dir))
    assert "destroyed" in virtainer("destroy", domain_name).stdout
    assert json.loads(virtainer("status", domain_name, "--json").stdout)["state"] == "shut-off"
    assert sha256(tiny.base_image) == base_before


def test_console_command_in_a_real_terminal(tiny: TinyGuest, vm_dir: Path, domain_name: str) -> None:
    virtainer(*up_args(tiny, domain_name, vm_dir))
    wait_until(lambda: "GUEST-READY" in serial_log(vm_dir), 60, "the guest's ready line")
    child = pexpect.spawn(VIRTAINER[0], [*VIRTAINER[1:], "console", domain_name], timeout=30, env=dict(os.environ))
    child.expect("Escape character is")
    child.send("\recho TERM-$((40+2))\r")
    child.expect("TERM-42")
    child.sendcontrol("]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_diff_is_reused_across_ups_and_base_unchanged(tiny: TinyGuest, vm_dir: Path, domain_name: str) -> None:
    base_before = sha256(tiny.base_image)
    first = virtainer(*up_args(tiny, domain_name, vm_dir))
    assert "created diff" in first.stderr
    wait_until(lambda: "GUEST-DISK-BOOTS=1" in serial_log(vm_dir), 60, "first boot's disk counter")
    virtainer("down", domain_name)
    second = virtainer(*up_args(tiny, domain_name, vm_dir))
    assert "reusing diff" in second.stderr
    # the guest wrote its boot counter into the diff: the second boot reads 1 and writes 2
    wait_until(lambda: "GUEST-DISK-BOOTS=2" in serial_log(vm_dir), 60, "second boot's disk counter")
    virtainer("down", domain_name)
    assert sha256(tiny.base_image) == base_before


def test_diff_on_a_different_base_is_refused(tiny: TinyGuest, vm_dir: Path, domain_name: str) -> None:
    virtainer(*up_args(tiny, domain_name, vm_dir))
    virtainer("destroy", domain_name)
    other_base = vm_dir / "other-base.qcow2"
    shutil.copy(tiny.base_image, other_base)
    with other_base.open("ab") as stream:
        stream.write(b"\0" * 512)  # same guest, different bytes: a different base
    diff = vm_dir / "diff.qcow2"
    before = (sha256(diff), (vm_dir / "diff.qcow2.base.json").read_text(), sha256(other_base))
    refused = virtainer(*up_args(tiny, domain_name, vm_dir, base=other_base), check=False)
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("virtainer: error:")]
    assert len(errors) == 1 and "was made on base" in errors[0]
    assert sha256(tiny.base_image)[:16] in refused.stderr and sha256(other_base)[:16] in refused.stderr
    assert (sha256(diff), (vm_dir / "diff.qcow2.base.json").read_text(), sha256(other_base)) == before


def test_network_readiness_stages(tiny: TinyGuest, vm_dir: Path, domain_name: str, nat_network: str) -> None:
    args = up_args(tiny, domain_name, vm_dir)
    args[args.index("--network") + 1] = f"network:{nat_network}"
    args[args.index("--wait-for") + 1] = "running,ip,ssh"
    args += ["--accelerator", "tcg"]  # render asks no libvirt about KVM: the same choice on both
    done = virtainer(*args)
    # render prints what up defined: the MAC up recorded for the new diff, the disks' formats
    rendered = virtainer("render", *args[1:]).stdout
    assert rendered == (vm_dir / "state" / "domain.xml").read_text()
    address = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("address:"))
    status = json.loads(virtainer("status", domain_name, "--json").stdout)
    assert address in [item["address"] for item in status["addresses"]]
    stages = [record["stage"] for record in status["readiness"]["stages"]]
    assert stages == ["running", "ip", "ssh"]
    times = [record["elapsed_s"] for record in status["readiness"]["stages"]]
    assert times == sorted(times)
    assert "TINY-GUEST-LISTENER" in status["readiness"]["stages"][-1]["detail"]


def test_render_prints_valid_xml_without_libvirt(tiny: TinyGuest, vm_dir: Path) -> None:
    args = up_args(tiny, "render-only", vm_dir)
    args[0] = "render"
    done = virtainer(*args[: args.index("--wait-for")], "--accelerator", "tcg")
    assert "<domain " in done.stdout and 'type="qemu"' in done.stdout
    assert not (vm_dir / "state").exists()  # nothing written
