"""Guest-agent operations benchmark: `virtainer exec` latency against `ssh`, output and upload
throughput through the agent. Prints numbers; not a test.

    .venv/bin/python benchmarks/guest_ops.py [--vm NAME --user debian --key KEY] [--rounds 5] [--mib 20]

Without --vm it boots the project's Debian cloud test guest (2 vCPUs, 1 GiB) and removes it
afterwards. Rounds are interleaved (exec, ssh, exec, ssh, ...): the machine is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.guests import cloud_guest  # noqa: E402
from tests.ssh import SSH_OPTIONS  # noqa: E402

VIRTAINER = [sys.executable, "-m", "virtainer.cli"]


def timed(command: list[str], **options: object) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, **options)  # type: ignore[call-overload]
    return time.monotonic() - started


@contextlib.contextmanager
def booted_guest() -> Iterator[tuple[str, str, str, Path]]:
    directory = Path(tempfile.mkdtemp(prefix="guest-ops-", dir="/var/tmp"))
    directory.chmod(0o755)
    key = directory / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = f"vt-bench-ops-{directory.name[-6:]}"
    guest = cloud_guest()
    up = [
        *VIRTAINER, "up", name, "--image", str(guest.base_image), "--ssh-keys", f"{key}.pub", "--vcpus", "2",
        "--memory", "1024", "--state-dir", str(directory / "state"), "--diff", str(directory / "diff.qcow2"),
    ]  # fmt: skip
    done = subprocess.run(up, check=True, capture_output=True, text=True)
    address = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("address:"))
    try:
        yield name, address, guest.default_user, key
    finally:
        for command in (["destroy", name], ["undefine", name]):
            subprocess.run(["virsh", "-q", "-c", "qemu:///system", *command], capture_output=True, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def report(label: str, seconds: list[float]) -> None:
    print(f"{label:42} median {statistics.median(seconds):6.2f} s   min {min(seconds):6.2f}   max {max(seconds):6.2f}")


def run(name: str, address: str, user: str, key: Path, rounds: int, mib: int) -> None:
    ssh = ["ssh", "-i", str(key), *SSH_OPTIONS, f"{user}@{address}"]
    exec_times, ssh_times = [], []
    for _ in range(rounds):
        exec_times.append(timed([*VIRTAINER, "exec", name, "--", "true"]))
        ssh_times.append(timed([*ssh, "true"]))
    report("exec true (virtainer exec, agent)", exec_times)
    report("ssh true (new connection)", ssh_times)

    size = mib << 20
    subprocess.run(
        [*VIRTAINER, "exec", name, "--", "sh", "-c", f"head -c {size} /dev/urandom > /var/tmp/bench"], check=True
    )
    out_times, ssh_out = [], []
    for _ in range(rounds):
        out_times.append(timed([*VIRTAINER, "exec", name, "--", "cat", "/var/tmp/bench"]))
        ssh_out.append(timed([*ssh, "cat /var/tmp/bench"]))
    report(f"{mib} MiB of stdout, exec", out_times)
    report(f"{mib} MiB of stdout, ssh", ssh_out)
    print(
        f"{'':42} exec {mib / statistics.median(out_times):.1f} MiB/s, ssh {mib / statistics.median(ssh_out):.1f} MiB/s"
    )

    with tempfile.TemporaryDirectory() as local:
        source = Path(local) / "upload"
        source.write_bytes(hashlib.sha256(b"x").digest() * (size // 32))
        in_times = []
        for index in range(rounds):
            in_times.append(timed([*VIRTAINER, "cp", str(source), f"{name}:/var/tmp/upload-{index}"]))
        report(f"{mib} MiB cp into the guest", in_times)
        print(f"{'':42} {mib / statistics.median(in_times):.1f} MiB/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vm", help="a running VM (default: boot the cloud test guest)")
    parser.add_argument("--address", help="its address for ssh (with --vm)")
    parser.add_argument("--user", default="debian")
    parser.add_argument("--key", type=Path, help="private key for ssh (with --vm)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=20)
    args = parser.parse_args()
    if args.vm:
        run(args.vm, args.address, args.user, args.key, args.rounds, args.mib)
        return 0
    with booted_guest() as (name, address, user, key):
        run(name, address, user, key, args.rounds, args.mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
