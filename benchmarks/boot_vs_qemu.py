"""Time to SSH: `virtainer up` against a bare qemu-system-x86_64 command line, side by side.

Both boot the same base image (through their own fresh qcow2 overlay) with the same seed ISO, CPUs,
memory, accelerator and network (a tap on libvirt's `default` bridge, so DHCP and NAT are the
same), and both are timed by the same external SSH poller: the first `ssh … true` that succeeds.
Rounds alternate which goes first, so machine noise falls on both. Prints a table and the ratio.

    sudo .venv/bin/python benchmarks/boot_vs_qemu.py [--rounds 2] [--image base.qcow2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.guests import cloud_guest  # noqa: E402
from tests.ssh import SSH_OPTIONS, make_key  # noqa: E402
from virtainer.cloudinit import SeedRequest, build_seed, write_seed_iso  # noqa: E402

BRIDGE = "virbr0"
BRIDGE_CONF = Path("/etc/qemu/bridge.conf")
POLL_S = 1.0  # the same polling rate for both: faster polling steals CPU from TCG


@dataclass
class Run:
    who: str
    ssh_s: float
    overhead_s: float | None = None  # virtainer only: command start -> domain running


def ssh_works(key: Path, address: str) -> bool:
    command = ["ssh", "-i", str(key), *SSH_OPTIONS, f"debian@{address}", "true"]
    return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0


def lease_for(mac: str) -> str | None:
    done = subprocess.run(
        ["virsh", "-q", "-c", "qemu:///system", "net-dhcp-leases", "default", "--mac", mac],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    match = re.search(r"ipv4\s+(\d+\.\d+\.\d+\.\d+)/", done.stdout)
    return match.group(1) if match else None


def poll_ssh(key: Path, mac: str, started: float, deadline_s: float = 600) -> float:
    """Seconds from `started` until SSH login works; address from the DHCP lease of `mac`."""
    pause = threading.Event()
    while time.monotonic() - started < deadline_s:
        address = lease_for(mac)
        if address and ssh_works(key, address):
            return time.monotonic() - started
        pause.wait(POLL_S)
    raise TimeoutError(f"no SSH within {deadline_s} s")


def fresh_mac() -> str:
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in os.urandom(3))


def bare_qemu(work: Path, base: Path, seed: Path, key: Path, vcpus: int, memory: int, mac: str) -> Run:
    overlay = work / "bare.qcow2"
    overlay.unlink(missing_ok=True)
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay)]
    subprocess.run(create, check=True)
    command = [
        "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", str(memory), "-smp", str(vcpus),
        "-drive", f"file={overlay},if=virtio,format=qcow2", "-drive", f"file={seed},media=cdrom,format=raw",
        "-netdev", f"bridge,id=n0,br={BRIDGE}", "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
        "-device", "virtio-rng-pci", "-display", "none", "-serial", f"file:{work / 'bare-serial.log'}",
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return Run("bare qemu", poll_ssh(key, mac, started))
    finally:
        process.terminate()
        process.wait(30)


def virtainer_up(work: Path, base: Path, key: Path, vcpus: int, memory: int, mac: str) -> Run:
    name = "bench-virtainer"
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "destroy", name], capture_output=True, check=False)
    diff = work / "virtainer.qcow2"
    for stale in work.glob("virtainer.qcow2*"):
        stale.unlink()
    command = [
        str(ROOT / ".venv/bin/virtainer"), "up", name, "--image", str(base), "--os-variant", "debian12",
        "--ssh-keys", str(key.with_suffix(".pub")), "--vcpus", str(vcpus), "--memory", str(memory),
        "--diff", str(diff), "--state-dir", str(work / "virtainer-state"), "--mac", mac,
        "--accelerator", "tcg", "--wait-for", "running,ip,ssh",
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ssh_s = poll_ssh(key, mac, started)
        _out, err = process.communicate(timeout=600)
    finally:
        subprocess.run(["virsh", "-q", "-c", "qemu:///system", "destroy", name], capture_output=True, check=False)
        subprocess.run(["virsh", "-q", "-c", "qemu:///system", "undefine", name], capture_output=True, check=False)
    match = re.search(r"^\s*([\d.]+)s domain '.*' started", err, re.MULTILINE)
    return Run("virtainer up", ssh_s, float(match.group(1)) if match else None)


def seed_iso(work: Path, public_key: Path) -> Path:
    request = SeedRequest(
        hostname="bench", default_user="debian", ssh_authorized_keys=(public_key.read_text().strip(),)
    )
    path = work / "seed.iso"
    write_seed_iso(build_seed(request), path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--image", type=Path, help="base image (default: the project's Debian test image)")
    parser.add_argument("--vcpus", type=int, default=2)
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (serial logs) for inspection")
    args = parser.parse_args()
    if not BRIDGE_CONF.exists() or f"allow {BRIDGE}" not in BRIDGE_CONF.read_text():
        BRIDGE_CONF.parent.mkdir(parents=True, exist_ok=True)
        with BRIDGE_CONF.open("a") as stream:
            stream.write(f"allow {BRIDGE}\n")  # lets bare QEMU join libvirt's bridge via its helper
    base = args.image or cloud_guest().base_image
    work = Path(tempfile.mkdtemp(prefix="virtainer-bench-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    key = make_key(work)
    seed = seed_iso(work, key.public)
    runs: list[Run] = []
    try:
        for round_index in range(args.rounds):
            order = ["bare", "virtainer"] if round_index % 2 == 0 else ["virtainer", "bare"]
            for who in order:
                mac = fresh_mac()  # a MAC never seen before: no stale DHCP lease can answer for it
                if who == "bare":
                    run = bare_qemu(work, base, seed, key.private, args.vcpus, args.memory, mac)
                else:
                    run = virtainer_up(work, base, key.private, args.vcpus, args.memory, mac)
                runs.append(run)
                print(f"round {round_index + 1}: {run.who:13s} ssh {run.ssh_s:6.1f} s", file=sys.stderr)
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(runs, args.json)
    return 0


def report(runs: list[Run], as_json: bool) -> None:
    bare = statistics.median(run.ssh_s for run in runs if run.who == "bare qemu")
    ours = statistics.median(run.ssh_s for run in runs if run.who == "virtainer up")
    overheads = [run.overhead_s for run in runs if run.overhead_s is not None]
    overhead = statistics.median(overheads) if overheads else float("nan")
    result = {
        "bare_qemu_ssh_s": round(bare, 1),
        "virtainer_ssh_s": round(ours, 1),
        "ratio": round(ours / bare, 3),
        "virtainer_overhead_s": round(overhead, 2),
        "rounds": len(runs) // 2,
    }
    if as_json:
        print(json.dumps(result))
        return
    print(f"bare qemu-system-x86_64 to SSH : {bare:6.1f} s (median)")
    print(f"virtainer up to SSH            : {ours:6.1f} s (median)")
    print(f"ratio virtainer / bare         : {ours / bare:6.3f}   (goal <= 1.05)")
    print(f"virtainer overhead to running  : {overhead:6.2f} s   (goal < 1 s)")


if __name__ == "__main__":
    sys.exit(main())
