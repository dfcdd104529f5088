"""`docker run --runtime=virtainer` against runc, side by side, interleaved rounds.

- run: `docker run --rm --runtime=R busybox true`, virtainer and runc alternating: wall time and the
  container's CPU seconds (its cgroup's cpuacct, under a cgroup parent of this benchmark's own)
- verbs: what each call of the runtime's executable costs beyond runc's (dockerd calls it for
  create, start, state, kill and delete): `virtainer-runtime state` against `runc state`
- stages: debug rounds (VIRTAINER_DEBUG=1, the kernel kept quiet): the launcher's timeline, lined up
  with `docker run`'s start and end. Sources: this host's clock at each step of the runtime's create
  and the launcher, libvirt's own timestamps in QEMU's log, the guest init's clock (from its
  kernel's start) at each step of the boot, sent over the control port
- exec: `docker exec NAME true` in a running virtainer container and a runc one, alternating
  (--exec-rounds each); medians, ranges, ratio
- memory: idle `sleep` containers (--containers, 3): the first one per process, PSS, USS and RSS
  without the guest's RAM (the memfd both QEMU and virtiofsd map), the guest RAM it touched, the
  cgroup's own count; then each further container's USS, what one more adds (the runtime tree's
  read-only files are shared, so their PSS splits between the containers)

    sudo .venv/bin/python benchmarks/runtime_bench.py [--rounds 3] [--exec-rounds 10] [--runtime virtainer]
        [--containers 3] [--against OTHER] [--memory-rounds 3]   # OTHER: another checkout's
        registration, same rounds; its idle memory and ours, each container alone, interleaved
Needs the runtime registered (`virtainer runtime install`). Goals (issue 10): the run under 4 s,
the overhead beyond guest RAM under 64 MiB. The machine is shared: the load is printed with the
numbers, and CPU seconds compare better than wall time when it is high.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.waiting import wait_until  # noqa: E402

BUILD = ROOT / "tests" / "runtime" / "build-test-images.sh"
MARK = re.compile(r"^virtainer: at ([\d.]+) \(\+\s*[-\d.]+ s\)  (.*)$", re.MULTILINE)
GUEST_MARK = re.compile(r"^guest at ([\d.]+) s: (.*)$")
CGROUP_V1 = Path("/sys/fs/cgroup/cpuacct")
# the kernel's own messages cost time on the serial console under TCG: the stage rounds keep
# them as quiet as a normal run does
STAGE_ENV = ("VIRTAINER_DEBUG=1", "RUNCVM_KERNEL_APPEND=quiet loglevel=0")
GUEST_RAM = re.compile(r"memfd:memory-backend-memfd")  # the guest's RAM, mapped by QEMU and virtiofsd
MIB = 2**20


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busybox_image() -> str:
    done = subprocess.run([str(BUILD), "busybox"], capture_output=True, text=True, check=True, timeout=600)
    return done.stdout.split()[1]


# -- docker run: wall time and the container's CPU ------------------------------------------


@contextlib.contextmanager
def cgroup_parent() -> Iterator[str]:
    """A cgroup parent of our own: cpuacct keeps counting what its removed children used."""
    name = f"vt-bench-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        for controller in Path("/sys/fs/cgroup").iterdir():
            remove_cgroup(controller / name)


def remove_cgroup(path: Path) -> None:
    """Docker removed the container's own cgroup under it; anything left goes too, leaves first."""
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_dir():
                remove_cgroup(child)
        with contextlib.suppress(OSError):
            path.rmdir()


def cpu_seconds(parent: str) -> float:
    usage = CGROUP_V1 / parent / "cpuacct.usage"
    if usage.exists():
        return int(usage.read_text()) / 1e9
    stat = Path("/sys/fs/cgroup") / parent / "cpu.stat"  # cgroup v2
    fields = dict(line.split() for line in stat.read_text().splitlines())
    return int(fields["usage_usec"]) / 1e6


@dataclass
class Run:
    wall: float
    cpu: float
    stderr: str
    started: float
    ended: float


def timed_run(image: str, runtime: str | None, *env: str) -> Run:
    with cgroup_parent() as parent:
        command = ["docker", "run", "--rm", f"--cgroup-parent=/{parent}"]
        command += [f"--runtime={runtime}"] if runtime else []
        command += [arg for entry in env for arg in ("-e", entry)] + [image, "true"]
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        ended = time.time()
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")
        return Run(ended - started, cpu_seconds(parent), done.stderr, started, ended)


def run_rounds(image: str, runtimes: list[str], rounds: int) -> None:
    """Each round: every runtime in turn (a second registration from another checkout with
    --against), then runc."""
    runs: dict[str, list[Run]] = {name: [] for name in [*runtimes, "runc"]}
    for round_ in range(1, rounds + 1):
        line = []
        for name in runs:
            run = timed_run(image, None if name == "runc" else name)
            runs[name].append(run)
            line.append(f"{name} {run.wall:6.2f} s ({run.cpu:5.2f} CPU s)")
        print(f"round {round_}: {'   '.join(line)}   load {load()}")
    runc_wall = statistics.median(run.wall for run in runs["runc"])
    for name in runtimes:
        wall, cpu = (statistics.median(getattr(run, what) for run in runs[name]) for what in ("wall", "cpu"))
        low, high = min(run.wall for run in runs[name]), max(run.wall for run in runs[name])
        print(f"docker run --rm busybox true: {name} {wall:.2f} s ({low:.2f}-{high:.2f}), runc {runc_wall:.2f} s "
              f"(median of {rounds}), ratio {wall / runc_wall:.1f}; container CPU: {name} {cpu:.2f} s, runc "
              f"{statistics.median(run.cpu for run in runs['runc']):.2f} s")  # fmt: skip


# -- the runtime's executable, verb by verb ---------------------------------------------------


def verb_cost(runtime_path: str, rounds: int) -> None:
    """`state` of an unknown container: Python start-up and parsing, then runc's own answer."""
    runc = shutil.which("runc") or "runc"
    root = f"/run/vt-bench-{uuid.uuid4().hex[:8]}"
    times: dict[str, list[float]] = {"virtainer-runtime": [], "runc": []}
    for _ in range(rounds):
        for label, executable in (("virtainer-runtime", runtime_path), ("runc", runc)):
            started = time.monotonic()
            subprocess.run([executable, "--root", root, "state", "vt-bench-none"], capture_output=True, check=False)
            times[label].append(time.monotonic() - started)
    shutil.rmtree(root, ignore_errors=True)
    ours, theirs = (statistics.median(times[label]) for label in ("virtainer-runtime", "runc"))
    print(f"one runtime call (state): virtainer-runtime {ours * 1000:.0f} ms, runc {theirs * 1000:.0f} ms "
          f"(median of {rounds}): {(ours - theirs) * 1000:.0f} ms more per call; dockerd makes 3-5 calls "
          f"per docker run (create, start, delete, and state/kill as needed)")  # fmt: skip


def runtime_path(runtime: str) -> str:
    done = subprocess.run(["docker", "info", "-f", "{{json .Runtimes}}"], capture_output=True, text=True, check=True)
    found = re.search(rf'"{re.escape(runtime)}":\{{"path":"([^"]+)"', done.stdout)
    if not found:
        raise SystemExit(f"runtime {runtime} is not registered with dockerd (run: virtainer runtime install)")
    return found.group(1)


# -- where the time goes ------------------------------------------------------------------------

# (phase, the mark that ends it); a phase starts where the previous one ended
PHASES = (
    ("dockerd/containerd until the runtime's create", "runtime create started"),
    ("runtime create: Python + config.json rewrite", "runtime create: config.json rewritten, runc create follows"),
    ("runc create + start until the launcher runs", "launcher process started"),
    ("launcher: Python start-up and imports", "launcher's imports done"),
    ("launcher: network, initramfs, domain XML", "network, initramfs and domain XML ready"),
    ("libvirt (embedded): open", "libvirt (embedded) open"),
    ("libvirt: virtiofsd up, QEMU exec'd", "QEMU exec'd (libvirt's log)"),
    ("QEMU start-up until paused and ready", "libvirt started virtiofsd and QEMU (paused)"),
    ("launcher execs the supervisor: its start-up", "supervisor's imports done (libvirt let go)"),
    ("resume", "VM resumed"),
    ("firmware + kernel decompression", "guest kernel started"),
    ("kernel until /init", "guest: init started"),
    ("init: modules (virtio, virtiofs)", "guest: modules loaded"),
    ("init: ports, root mount, network", "guest: command started"),
    ("the command (true) and its output", "guest: command exited, output relayed"),
    ("exit status to the launcher", "the command exited with 0"),
    ("exit acknowledged", "output flushed, exit acknowledged"),
    ("guest power-off", "VM powered off"),
    ("QEMU quits, virtiofsd ends", "QEMU and virtiofsd ended"),
    ("(before the supervisor: libvirt destroys the domain, closes)", "libvirt closed"),
    ("launcher exit, runtime delete, dockerd", "docker run returned"),
)


def timeline(run: Run) -> dict[str, float]:
    """Every mark of one debug run at its wall-clock time; the guest's put on ours through the
    moment its "ports open" mark arrived (its clock runs from its kernel's start)."""
    marks: dict[str, float] = {"docker run started": run.started, "docker run returned": run.ended}
    guest: dict[str, float] = {}
    for at, what in MARK.findall(run.stderr):
        if found := GUEST_MARK.match(what):
            guest[found.group(2)] = float(found.group(1))
            marks[f"guest: {found.group(2)}"] = float(at)  # arrival, until rebased below
        elif "starting up libvirt" in what:
            marks["QEMU exec'd (libvirt's log)"] = float(at)
        else:
            marks[what] = float(at)
    if "ports open" in guest:
        kernel_started = marks["guest: ports open"] - guest["ports open"]
        marks["guest kernel started"] = kernel_started
        for what, uptime in guest.items():
            marks[f"guest: {what}"] = kernel_started + uptime
    return marks


def stages(image: str, runtimes: list[str], rounds: int) -> None:
    per_phase: dict[str, dict[str, list[float]]] = {name: {phase: [] for phase, _ in PHASES} for name in runtimes}
    cpu_lines: dict[str, list[str]] = {name: [] for name in runtimes}
    for _ in range(rounds):
        for name in runtimes:
            run = timed_run(image, name, *STAGE_ENV)
            marks = timeline(run)
            previous = marks["docker run started"]
            for phase, end in PHASES:
                if end in marks:
                    per_phase[name][phase].append(marks[end] - previous)
                    previous = marks[end]
            cpu_lines[name] += [what for _, what in MARK.findall(run.stderr) if what.startswith("CPU seconds")]
    print(f"where the time goes (median of {rounds} debug rounds, load {load()}):")
    print("  " + "".join(f"{name:>12}" for name in runtimes))
    totals = dict.fromkeys(runtimes, 0.0)
    for phase, _ in PHASES:
        cells = []
        for name in runtimes:
            seconds = statistics.median(per_phase[name][phase]) if per_phase[name][phase] else 0.0
            totals[name] += seconds
            cells.append(f"{seconds:10.2f} s")
        print(f"  {''.join(cells)}  {phase}")
    print(f"  {''.join(f'{totals[name]:10.2f} s' for name in runtimes)}  in all")
    for name in runtimes:
        for line in cpu_lines[name][-1:]:
            print(f"  {name}, at the command's exit: {line}")


# -- docker exec and idle memory ------------------------------------------------------------------


@contextlib.contextmanager
def idle_container(image: str, runtime: str | None) -> Iterator[str]:
    name = f"vt-bench-{uuid.uuid4().hex[:8]}"
    command = ["docker", "run", "-d", "--name", name, *([f"--runtime={runtime}"] if runtime else [])]
    subprocess.run([*command, image, "sleep", "600"], capture_output=True, check=True, timeout=120)
    try:
        # `sleep` runs in the VM, not in the container's process list: docker exec answers once it runs
        in_vm = ["docker", "exec", name, "true"]
        wait_until(lambda: subprocess.run(in_vm, capture_output=True, check=False, timeout=120).returncode == 0,
                   240, "the command to run")  # fmt: skip
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def exec_latency(names: dict[str, str], rounds: int) -> None:
    """`docker exec NAME true` wall times in each container, interleaved."""
    times: dict[str, list[float]] = {label: [] for label in names}
    for _ in range(rounds):
        for label, name in names.items():
            started = time.monotonic()
            subprocess.run(["docker", "exec", name, "true"], capture_output=True, check=True, timeout=120)
            times[label].append(time.monotonic() - started)
    vm, runc = (statistics.median(times[label]) for label in names)
    ranges = {label: f"{min(values):.3f}-{max(values):.3f}" for label, values in times.items()}
    print(f"docker exec NAME true: virtainer {vm:.3f} s ({ranges['virtainer']}), runc {runc:.3f} s "
          f"({ranges['runc']}), median of {rounds} interleaved, ratio {vm / runc:.1f}")  # fmt: skip


def full_id(name: str) -> str:
    done = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def container_pids(container: str) -> list[int]:
    for procs in (Path(f"/sys/fs/cgroup/memory/docker/{container}/cgroup.procs"),
                  Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope/cgroup.procs")):  # fmt: skip
        if procs.exists():
            return [int(pid) for pid in procs.read_text().split()]
    raise SystemExit(f"no cgroup found for container {container}")


@dataclass
class ProcessMemory:
    """One process's memory in KiB, the guest's RAM (the memfd QEMU and virtiofsd map) apart."""

    pss: int = 0  # its share of every page it maps: the read-only files split between containers
    uss: int = 0  # the pages only it maps: what it costs beyond what other containers share
    rss: int = 0  # every page it maps, in full: the cost when it is the first to load its files
    guest_rss: int = 0


def process_memory(pid: int) -> ProcessMemory:
    found = ProcessMemory()
    in_guest_ram = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and len(head) >= 5:  # a mapping's first line
            in_guest_ram = len(head) == 6 and bool(GUEST_RAM.search(head[5]))
        elif head[0] == "Rss:" and in_guest_ram:
            found.guest_rss += int(head[1])
        elif in_guest_ram:
            continue
        elif head[0] == "Pss:":
            found.pss += int(head[1])
        elif head[0] == "Rss:":
            found.rss += int(head[1])
        elif head[0] in ("Private_Clean:", "Private_Dirty:"):
            found.uss += int(head[1])
    return found


def container_memory(name: str) -> dict[tuple[str, int], ProcessMemory]:
    found = {}
    for pid in container_pids(full_id(name)):
        try:
            found[(Path(f"/proc/{pid}/comm").read_text().strip(), pid)] = process_memory(pid)
        except OSError:
            continue
    return found


def mib(kib: int) -> str:
    return f"{kib / 1024:6.1f}"


def memory(name: str) -> None:
    """One idle container (the only one of the runtime running), by process."""
    time.sleep(10)  # a measurement, not a synchronisation: memory after 10 s of idling
    found = container_memory(name)
    print("idle container, memory beyond the guest's RAM (without the guest-RAM memfd that QEMU and "
          "virtiofsd map), MiB: PSS (its share of each page; the runtime tree's read-only files split "
          "between containers) / USS (its own pages) / RSS (every page in full):")  # fmt: skip
    for (comm, pid), used in sorted(found.items(), key=lambda item: -item[1].pss):
        print(f"  {mib(used.pss)} PSS {mib(used.uss)} USS {mib(used.rss)} RSS  {comm} ({pid})")
    total = ProcessMemory(*(sum(getattr(used, key) for used in found.values()) for key in ("pss", "uss", "rss")))
    guest_touched = max(used.guest_rss for used in found.values())
    print(f"  {mib(total.pss)} PSS {mib(total.uss)} USS {mib(total.rss)} RSS  in all (goal: under 64 MiB); "
          f"the guest touched {guest_touched // 1024} MiB of its RAM")  # fmt: skip
    cgroup_usage(full_id(name))


def marginal_memory(names: list[str]) -> None:
    """Containers 2, 3...: what each adds is its USS (the shared files are already in memory)."""
    time.sleep(10)
    for index, name in enumerate(names, start=2):
        processes = container_memory(name).values()
        uss, pss = sum(one.uss for one in processes), sum(one.pss for one in processes)
        print(f"  container {index} of {len(names) + 1}: {mib(uss)} MiB USS (what one more container adds), "
              f"{mib(pss)} MiB PSS")  # fmt: skip


def memory_side_by_side(image: str, runtimes: list[str], rounds: int) -> None:
    """Each runtime's idle container alone (no other of these runtimes' up), in turn, `rounds` times."""
    found: dict[str, dict[str, list[ProcessMemory]]] = {name: {} for name in runtimes}
    for _ in range(rounds):
        for name in runtimes:
            with idle_container(image, name) as container:
                time.sleep(10)  # a measurement, not a synchronisation: memory after 10 s of idling
                for (comm, _pid), used in container_memory(container).items():
                    found[name].setdefault(comm, []).append(used)
    print(f"idle container alone, beyond the guest's RAM, MiB PSS / USS, median of {rounds} interleaved "
          f"rounds (load {load()}):")  # fmt: skip
    for name in runtimes:
        medians = {comm: (statistics.median(one.pss for one in used), statistics.median(one.uss for one in used))
                   for comm, used in found[name].items()}  # fmt: skip
        cells = ", ".join(f"{comm} {mib(pss).strip()} / {mib(uss).strip()}" for comm, (pss, uss) in
                          sorted(medians.items(), key=lambda item: -item[1][0]))  # fmt: skip
        total_pss, total_uss = (sum(values[index] for values in medians.values()) for index in (0, 1))
        print(f"  {name}: {mib(int(total_pss)).strip()} PSS / {mib(int(total_uss)).strip()} USS in all: {cells}")


def cgroup_usage(container: str) -> None:
    usage = Path(f"/sys/fs/cgroup/memory/docker/{container}/memory.usage_in_bytes")
    if usage.exists():
        stat = dict(line.split() for line in usage.with_name("memory.stat").read_text().splitlines())
        print(f"  cgroup: {int(usage.read_text()) / MIB:.0f} MiB charged (rss {int(stat['rss']) / MIB:.0f}, "
              f"shmem {int(stat['shmem']) / MIB:.0f} (the guest's RAM), other page cache "
              f"{(int(stat['cache']) - int(stat['shmem'])) / MIB:.0f} MiB)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--exec-rounds", type=int, default=10)
    parser.add_argument("--runtime", default="virtainer")
    parser.add_argument("--against", metavar="RUNTIME", help="another registration (checkout), same rounds")
    parser.add_argument("--containers", type=int, default=3, help="idle containers for the memory figures")
    parser.add_argument("--memory-rounds", type=int, default=3, help="with --against: idle memory, each alone")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("runtime_bench needs root (cgroups, /proc/PID/smaps of the container's processes)")
    image = busybox_image()
    print(f"{os.cpu_count()} CPUs, load {load()}")
    runtimes = [options.runtime, *([options.against] if options.against else [])]
    for name in runtimes:
        timed_run(image, name)  # warm: libvirt's QEMU probe and the KVM decision are cached
    run_rounds(image, runtimes, options.rounds)
    verb_cost(runtime_path(options.runtime), max(5, options.rounds))
    stages(image, runtimes, options.rounds)
    with idle_container(image, options.runtime) as vm, idle_container(image, None) as runc:
        exec_latency({"virtainer": vm, "runc": runc}, options.exec_rounds)
        memory(vm)
        with contextlib.ExitStack() as more:
            others = [more.enter_context(idle_container(image, options.runtime)) for _ in range(options.containers - 1)]
            marginal_memory(others)
    if options.against and options.memory_rounds:
        memory_side_by_side(image, runtimes, options.memory_rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
