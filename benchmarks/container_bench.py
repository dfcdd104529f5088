"""The virtainer container, measured: controller overhead, cloud guest to SSH against bare QEMU,
and idle memory of everything in the container except QEMU.

- overhead: `docker run -d` -> the controller logs "domain 'vm' started" (tiny guest, generic image)
- ssh: `docker run virtainer/debian` -> first SSH login to the container's address, and a bare
  `qemu-system-x86_64` boot of the same image and a same-content seed (benchmarks/boot_vs_qemu.py),
  side by side; their ratio
- memory: PSS of every process in the container but QEMU, once the tiny guest is ready; then the
  REST API's first answer (FastAPI loads on the first connection) and the memory after it

    sudo .venv/bin/python benchmarks/container_bench.py [--rounds 3] [--skip-cloud]
Goals (issue 14): overhead under 1.0 s; idle memory beyond QEMU under 60 MiB with the API on.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.boot_vs_qemu import bare_qemu, fresh_mac, seed_iso  # noqa: E402
from tests.container.conftest import tiny_options  # noqa: E402
from tests.container.docker import Container, build_image, docker, start  # noqa: E402
from tests.guests import cloud_guest, tiny_guest  # noqa: E402
from tests.ssh import make_key  # noqa: E402

CAPS = ("NET_ADMIN", "SYS_ADMIN")
STARTED = re.compile(r"domain '[^']+' started")


def wait_for(condition: object, timeout_s: float, interval_s: float) -> float:
    """Seconds until `condition()` is true (a poll with a deadline)."""
    started = time.monotonic()
    pause = threading.Event()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not done within {timeout_s} s")
        pause.wait(interval_s)
    return time.monotonic() - started


def controller_overhead(image: str, volume: Path, **env: str) -> tuple[float, Container]:
    guest = tiny_guest()
    started = time.monotonic()
    container = start(image, "bench-tiny", caps=CAPS, **tiny_options(guest, volume, **env))
    wait_for(lambda: STARTED.search(container.logs()), 60, 0.05)
    return time.monotonic() - started, container


def idle_memory_mib(container: Container) -> tuple[float, float, dict[str, float]]:
    """Memory of every process but QEMU: (PSS MiB, RSS MiB, PSS per command).

    PSS counts a shared page once, split among its users (libvirtd and the controller map the
    same libvirt libraries); RSS counts it in every process, so it overstates the total.
    """
    # `docker top` lists the container's processes with host PIDs: the image needs no procps
    listing = docker("top", container.name, "-eo", "pid,rss,comm", engine=container.engine).stdout
    pss_total = rss_total = 0.0
    per_command: dict[str, float] = {}
    for line in listing.splitlines()[1:]:
        pid, rss, command = line.split(maxsplit=2)
        if command.startswith("qemu-system"):
            continue
        pss = _pss_kib(int(pid)) / 1024
        per_command[command] = per_command.get(command, 0) + pss
        pss_total += pss
        rss_total += int(rss) / 1024
    return pss_total, rss_total, per_command


def _pss_kib(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
    return int(match.group(1)) if match else 0


def api_answers(address: str) -> bool:
    """Any HTTP answer from the container's API (it loads on the first connection; /healthz
    without a token is refused with 401, which is an answer)."""
    try:
        urllib.request.urlopen(f"http://{address}:8470/healthz", timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def cloud_container_ssh(image: str, volume: Path, key_dir: Path) -> float:
    key = make_key(key_dir)
    started = time.monotonic()
    volumes = [f"{key.public}:/tmp/id_rsa.pub:ro", f"{volume}:/mounted"]
    container = start(image, "bench-cloud", caps=CAPS, volumes=volumes)
    try:
        address = container.ip

        def login() -> bool:
            return key.run(f"debian@{address}", "true", timeout=30).returncode == 0

        wait_for(login, 600, 1.0)
        return time.monotonic() - started
    finally:
        container.remove()


def bare_ssh(work: Path) -> float:
    key = make_key(work)
    seed = seed_iso(work, key.public)
    return bare_qemu(work, cloud_guest().base_image, seed, key.private, 2, 1024, fresh_mac()).ssh_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-cloud", action="store_true", help="only overhead and memory (fast)")
    parser.add_argument("--no-api", action="store_true", help="measure with the REST API off (VIRTAINER_API=0)")
    args = parser.parse_args()
    generic = build_image("generic").tag
    work = Path(tempfile.mkdtemp(prefix="virtainer-cbench-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    overheads: list[float] = []
    memory: list[float] = []
    first_answers: list[float] = []
    memory_after_api: list[float] = []
    try:
        for index in range(args.rounds):
            volume = work / f"tiny-{index}"
            volume.mkdir()
            env = {"VIRTAINER_API": "0"} if args.no_api else {}
            overhead, container = controller_overhead(generic, volume, **env)
            try:
                wait_for(lambda c=container: "GUEST-READY" in c.logs(), 60, 0.5)
                total, rss, per_command = idle_memory_mib(container)
                if not args.no_api:
                    first_answers.append(wait_for(lambda c=container: api_answers(c.ip), 120, 0.05))
                    memory_after_api.append(idle_memory_mib(container)[0])
            finally:
                container.remove()
            overheads.append(overhead)
            memory.append(total)
            top = ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(per_command.items(), key=lambda x: -x[1])[:4])
            api = (
                f"; API answered after {first_answers[-1]:.2f} s, then {memory_after_api[-1]:.1f}"
                if first_answers
                else ""
            )
            line = (
                f"round {index + 1}: overhead {overhead:.2f} s, memory PSS {total:.1f} MiB / RSS {rss:.1f} MiB ({top})"
            )
            print(line + api, file=sys.stderr)
        print(f"docker run -> domain running : {statistics.median(overheads):6.2f} s (median; goal < 1.0 s)")
        print(f"idle memory except QEMU (PSS): {statistics.median(memory):6.1f} MiB (median; goal < 60 MiB)")
        if first_answers:
            print(f"the API's first answer       : {statistics.median(first_answers):6.2f} s (median; it loads then)")
            print(f"memory after it (PSS)        : {statistics.median(memory_after_api):6.1f} MiB (median)")
        if args.skip_cloud:
            return 0
        debian = build_image("debian", {"IMAGE_FILE": str(cloud_guest().base_image), "OS_VARIANT": "debian12"}).tag
        ours, bare = [], []
        for index in range(args.rounds):
            for who in ("bare", "container") if index % 2 == 0 else ("container", "bare"):
                round_dir = work / f"cloud-{index}-{who}"
                round_dir.mkdir()
                os.chmod(round_dir, 0o755)
                seconds = bare_ssh(round_dir) if who == "bare" else cloud_container_ssh(debian, round_dir, round_dir)
                (bare if who == "bare" else ours).append(seconds)
                print(f"round {index + 1}: {who:9s} ssh {seconds:6.1f} s", file=sys.stderr)
        print(f"bare QEMU to SSH             : {statistics.median(bare):6.1f} s (median)")
        print(f"docker run virtainer/debian  : {statistics.median(ours):6.1f} s (median)")
        print(f"ratio container / bare       : {statistics.median(ours) / statistics.median(bare):6.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
