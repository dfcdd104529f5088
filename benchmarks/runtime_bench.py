"""`docker run --runtime=virtainer` against runc, side by side, interleaved rounds.

- run: `docker run --rm --runtime=R busybox true` wall time, virtainer and runc alternating; ratio
- stages: one debug round (VIRTAINER_DEBUG=1): the launcher's own timeline (accelerator, libvirt,
  QEMU + virtiofsd up, VM running, command done, VM off) and the kernel's time to /init
- exec: `docker exec NAME true` in a running virtainer container and a runc one, alternating
  (--exec-rounds each); medians, ratio
- memory: one idle `sleep` container: the container cgroup's memory use against the guest's RAM

    sudo .venv/bin/python benchmarks/runtime_bench.py [--rounds 3] [--exec-rounds 10] [--runtime virtainer]
Needs the runtime registered (`virtainer runtime install`). Goals (issue 10): the run under 4 s,
the overhead beyond guest RAM under 64 MiB.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.waiting import wait_until  # noqa: E402

BUILD = ROOT / "tests" / "runtime" / "build-test-images.sh"
STAGE = re.compile(r"^virtainer:\s+([\d.]+) s\s+(.*)$", re.MULTILINE)
KERNEL_INIT = re.compile(r"^\[\s*([\d.]+)\] Run /init", re.MULTILINE)


def busybox_image() -> str:
    done = subprocess.run([str(BUILD), "busybox"], capture_output=True, text=True, check=True, timeout=600)
    return done.stdout.split()[1]


def timed_run(image: str, runtime: str | None, *env: str) -> tuple[float, str]:
    command = ["docker", "run", "--rm", *([f"--runtime={runtime}"] if runtime else [])]
    command += [arg for entry in env for arg in ("-e", entry)] + [image, "true"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return elapsed, done.stderr


def idle_memory(image: str, runtime: str) -> tuple[float, int]:
    """(container cgroup MiB, guest RAM MiB) of an idle container whose VM runs `sleep`."""
    name = f"vt-bench-mem-{int(time.time())}"
    subprocess.run(["docker", "run", "-d", "--name", name, f"--runtime={runtime}", image, "sleep", "600"],
                   capture_output=True, check=True, timeout=120)  # fmt: skip
    try:
        full_id = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True,
                                 check=True).stdout.strip()  # fmt: skip
        plan = Path(f"/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/{full_id}/virtainer/plan.json")
        candidates = [
            Path(f"/sys/fs/cgroup/memory/docker/{full_id}/memory.usage_in_bytes"),
            Path(f"/sys/fs/cgroup/system.slice/docker-{full_id}.scope/memory.current"),
        ]
        usage = next(path for path in candidates if path.exists())
        # idle: the guest's init waits for its command; give it time to settle, then read
        # `sleep` runs in the VM, not in the container's process list: docker exec answers once it runs
        in_vm = ["docker", "exec", name, "true"]
        wait_until(lambda: subprocess.run(in_vm, capture_output=True, check=False, timeout=120).returncode == 0,
                   240, "the command to run in the VM")  # fmt: skip
        time.sleep(10)  # a measurement, not a synchronisation: memory after 10 s of idling
        guest_mib = int(re.search(r'"memory_mib": (\d+)', plan.read_text()).group(1)) if plan.exists() else 0  # type: ignore[union-attr]
        return int(usage.read_text()) / 2**20, guest_mib
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def exec_latency(image: str, runtime: str, rounds: int) -> tuple[list[float], list[float]]:
    """`docker exec NAME true` wall times in a virtainer and a runc container, interleaved."""
    names = {kind: f"vt-bench-exec-{kind}-{int(time.time())}" for kind in ("vm", "runc")}
    try:
        for kind, name in names.items():
            engine = [f"--runtime={runtime}"] if kind == "vm" else []
            subprocess.run(["docker", "run", "-d", "--name", name, *engine, image, "sleep", "3600"],
                           capture_output=True, check=True, timeout=120)  # fmt: skip
        ready = ["docker", "exec", names["vm"], "true"]
        wait_until(lambda: subprocess.run(ready, capture_output=True, check=False, timeout=120).returncode == 0,
                   240, "docker exec to answer in the VM")  # fmt: skip
        times: dict[str, list[float]] = {"vm": [], "runc": []}
        for _ in range(rounds):
            for kind, name in names.items():
                started = time.monotonic()
                subprocess.run(["docker", "exec", name, "true"], capture_output=True, check=True, timeout=120)
                times[kind].append(time.monotonic() - started)
        return times["vm"], times["runc"]
    finally:
        for name in names.values():
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--exec-rounds", type=int, default=10)
    parser.add_argument("--runtime", default="virtainer")
    options = parser.parse_args()
    image = busybox_image()
    timed_run(image, options.runtime)  # warm: libvirt's QEMU probe and the KVM decision are cached
    vm_times, runc_times = [], []
    for round_ in range(1, options.rounds + 1):
        vm, _ = timed_run(image, options.runtime)
        runc, _ = timed_run(image, None)
        vm_times.append(vm)
        runc_times.append(runc)
        print(f"round {round_}: virtainer {vm:6.2f} s   runc {runc:5.2f} s   ratio {vm / runc:5.1f}")
    vm_median, runc_median = statistics.median(vm_times), statistics.median(runc_times)
    print(f"docker run --rm busybox true: virtainer {vm_median:.2f} s, runc {runc_median:.2f} s "
          f"(median of {options.rounds}), ratio {vm_median / runc_median:.1f}")  # fmt: skip
    _, debug = timed_run(image, options.runtime, "VIRTAINER_DEBUG=1")
    print("where the time goes (one debug round; the kernel prints more than usual):")
    for seconds, what in STAGE.findall(debug):
        print(f"  {float(seconds):6.2f} s  {what}")
    if match := KERNEL_INIT.search(debug):
        print(f"  kernel: /init starts {float(match.group(1)):.2f} s after the kernel does")
    vm_exec, runc_exec = exec_latency(image, options.runtime, options.exec_rounds)
    vm_median, runc_median = statistics.median(vm_exec), statistics.median(runc_exec)
    print(f"docker exec NAME true: virtainer {vm_median:.3f} s ({min(vm_exec):.3f}-{max(vm_exec):.3f}), "
          f"runc {runc_median:.3f} s ({min(runc_exec):.3f}-{max(runc_exec):.3f}), median of {options.exec_rounds} "
          f"interleaved, ratio {vm_median / runc_median:.1f}")  # fmt: skip
    cgroup_mib, guest_mib = idle_memory(image, options.runtime)
    print(f"idle container: cgroup memory {cgroup_mib:.0f} MiB, guest RAM {guest_mib} MiB "
          f"(only pages the guest touched count)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
