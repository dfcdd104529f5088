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

Old against new, interleaved (each round runs both, in alternating order; --skip-cloud implied):
another image (`--baseline-image TAG`, e.g. one built from an earlier checkout), or the same image
with an environment variable set (`--ab-env MALLOC_ARENA_MAX=2`).
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
from dataclasses import dataclass
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


@dataclass
class TinyRound:
    overhead_s: float
    pss_mib: float
    rss_mib: float
    per_command: dict[str, float]
    api_first_answer_s: float | None = None
    pss_after_api_mib: float | None = None

    def describe(self) -> str:
        top = ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(self.per_command.items(), key=lambda x: -x[1])[:4])
        line = (
            f"overhead {self.overhead_s:.2f} s, memory PSS {self.pss_mib:.1f} MiB / RSS {self.rss_mib:.1f} MiB ({top})"
        )
        if self.api_first_answer_s is not None:
            line += f"; API answered after {self.api_first_answer_s:.2f} s, then {self.pss_after_api_mib:.1f}"
        return line


def tiny_round(image: str, volume: Path, api: bool, **env: str) -> TinyRound:
    """docker run of the tiny guest: to domain running, idle memory, the API's first answer."""
    overhead, container = controller_overhead(image, volume, **env)
    try:
        wait_for(lambda: "GUEST-READY" in container.logs(), 60, 0.5)
        result = TinyRound(overhead, *idle_memory_mib(container))
        if api:
            result.api_first_answer_s = wait_for(lambda: api_answers(container.ip), 120, 0.05)
            result.pss_after_api_mib = idle_memory_mib(container)[0]
        return result
    finally:
        container.remove()


def compare(work: Path, rounds: int, variants: dict[str, tuple[str, dict[str, str]]], api: bool) -> None:
    """Interleaved rounds of each variant (name -> image, environment), medians side by side."""
    results: dict[str, list[TinyRound]] = {name: [] for name in variants}
    names = list(variants)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            image, env = variants[name]
            volume = work / f"tiny-{index}-{len(results[name])}-{names.index(name)}"
            volume.mkdir()
            results[name].append(tiny_round(image, volume, api, **env))
            load = Path("/proc/loadavg").read_text().split()[:3]
            print(f"round {index + 1}: {name:9s} {results[name][-1].describe()} (load {' '.join(load)})",
                  file=sys.stderr)  # fmt: skip
    for name in names:
        runs = results[name]
        print(f"{name:9s}: docker run -> domain running {statistics.median(r.overhead_s for r in runs):5.2f} s, "
              f"idle PSS {statistics.median(r.pss_mib for r in runs):5.1f} MiB (RSS "
              f"{statistics.median(r.rss_mib for r in runs):5.1f})", end="")  # fmt: skip
        after = [r.pss_after_api_mib for r in runs if r.pss_after_api_mib is not None]
        print(f", after the API's first answer {statistics.median(after):5.1f} MiB" if after else "")
    new = results["new"]
    overhead, pss = statistics.median(r.overhead_s for r in new), statistics.median(r.pss_mib for r in new)
    print("\n".join(verdicts(overhead, pss, api)))


def verdicts(overhead_s: float, pss_mib: float, api: bool) -> list[str]:
    """One line per goal of issue 14 that this benchmark measures."""

    def line(goal: str, met: bool, detail: str) -> str:
        return f"{'MET ' if met else 'MISS'} {goal}: {detail}"

    memory_goal = "idle memory beyond QEMU < 60 MiB PSS" + (" with the REST API on" if api else " (API off)")
    return [line("docker run -> domain running < 1.0 s", overhead_s < 1.0, f"{overhead_s:.2f} s"),
            line(memory_goal, pss_mib < 60, f"{pss_mib:.1f} MiB")]  # fmt: skip


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
    parser.add_argument("--baseline-image", help="compare against this image (old vs new, interleaved)")
    parser.add_argument("--ab-env", metavar="KEY=VALUE", help="compare the image without and with this variable")
    args = parser.parse_args()
    generic = build_image("generic").tag
    work = Path(tempfile.mkdtemp(prefix="virtainer-cbench-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    env = {"VIRTAINER_API": "0"} if args.no_api else {}
    if args.baseline_image or args.ab_env:
        variants = {"new": (generic, env)}
        if args.baseline_image:
            variants["baseline"] = (args.baseline_image, env)
        if args.ab_env:
            key, _, value = args.ab_env.partition("=")
            variants[args.ab_env] = (generic, {**env, key: value})
        try:
            compare(work, args.rounds, variants, api=not args.no_api)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    tiny: list[TinyRound] = []
    try:
        for index in range(args.rounds):
            volume = work / f"tiny-{index}"
            volume.mkdir()
            tiny.append(tiny_round(generic, volume, api=not args.no_api, **env))
            print(f"round {index + 1}: {tiny[-1].describe()}", file=sys.stderr)
        overheads = [r.overhead_s for r in tiny]
        memory = [r.pss_mib for r in tiny]
        first_answers = [r.api_first_answer_s for r in tiny if r.api_first_answer_s is not None]
        memory_after_api = [r.pss_after_api_mib for r in tiny if r.pss_after_api_mib is not None]
        print(f"docker run -> domain running : {statistics.median(overheads):6.2f} s (median; goal < 1.0 s)")
        print(f"idle memory except QEMU (PSS): {statistics.median(memory):6.1f} MiB (median; goal < 60 MiB)")
        if first_answers:
            print(f"the API's first answer       : {statistics.median(first_answers):6.2f} s (median; it loads then)")
            print(f"memory after it (PSS)        : {statistics.median(memory_after_api):6.1f} MiB (median)")
        print("\n".join(verdicts(statistics.median(overheads), statistics.median(memory), not args.no_api)))
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
