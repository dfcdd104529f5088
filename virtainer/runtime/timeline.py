"""Debug: where the time of one `--runtime=virtainer` container goes, from the clocks that saw it.

The launcher prints one `virtainer: at EPOCH (+S s)  WHAT` line per step on stderr when debugging
(S: seconds since the launcher process started); benchmarks/runtime_bench.py lines them up with
`docker run`'s own start and end. The sources: this host's wall clock at each of the launcher's
steps, the runtime's `create` (its start and the rewrite's end, kept in CREATE_TIMES), libvirt's
own timestamps in QEMU's log, and the guest init's "stage MS WHAT" lines (its kernel's clock).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

CREATE_TIMES = "create-times"  # in the container's run dir: "STARTED FINISHED" of `create`, epoch s
LIBVIRT_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\+0000: (.*)$")


def process_started_at() -> float:
    """The wall-clock time this process was started (exec'd): the interpreter's start-up counts."""
    after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start_ticks = int(after_name[19])  # field 22 of proc(5), starttime: clock ticks after boot
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def write_create_times(run_dir: Path) -> None:
    (run_dir / CREATE_TIMES).write_text(f"{process_started_at():.3f} {time.time():.3f}\n")


class Timeline:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = process_started_at()

    def mark(self, what: str, at: float | None = None) -> None:
        if self.enabled:
            moment = time.time() if at is None else at
            sys.stderr.write(f"virtainer: at {moment:.3f} (+{moment - self.started:5.2f} s)  {what}\n")
            sys.stderr.flush()

    def create(self, run_dir: Path) -> None:
        """The runtime's `create` of this container, as it recorded it."""
        try:
            started, finished = (float(word) for word in (run_dir / CREATE_TIMES).read_text().split())
        except (OSError, ValueError):
            return
        self.mark("runtime create started", started)
        self.mark("runtime create: config.json rewritten, runc create follows", finished)

    def guest(self, rest: str) -> None:
        """A guest init's "stage MS WHAT": MS on the guest's clock, from its kernel's start."""
        ms, _, what = rest.partition(" ")
        if ms.isdigit():
            self.mark(f"guest at {int(ms) / 1000:.3f} s: {what}")

    def cpu(self) -> None:
        """CPU seconds (user+system) so far of each process in the container (its PID namespace)."""
        if not self.enabled:
            return
        ticks = os.sysconf("SC_CLK_TCK")
        used = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                name, after_name = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            fields = after_name.split()
            used.append(f"{name[:15]} {(int(fields[11]) + int(fields[12])) / ticks:.2f}")
        self.mark("CPU seconds so far: " + ", ".join(sorted(used)))

    def libvirt_log(self, path: Path) -> None:
        """libvirt's timestamped lines in a domain's log (QEMU's start, its end)."""
        if not self.enabled:
            return
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return
        import datetime  # here: debugging only, and the supervisor stays in memory (~0.3 MiB)

        for line in lines:
            if match := LIBVIRT_STAMP.match(line):
                stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f")
                at = stamp.replace(tzinfo=datetime.UTC).timestamp()
                self.mark(f"{path.name}: {match.group(2)[:100]}", at)
