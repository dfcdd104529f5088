"""docker logs: the guest's serial console, interleaved with the controller's own lines.

Controller lines always start on a line of their own and look like
`[virtainer  12.34s] stage ip: 192.168.122.2 (lease), 51.2 s after domain start`, where the
seconds count from the container's start (the start of its PID 1), i.e. from `docker run`.
The console comes from the serial log file QEMU writes (libvirt's `<log file=...>`), so it is
mirrored even while someone is attached with `virsh console`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

from virtainer.readiness import StageRecord


def seconds_since_container_start() -> float:
    """How long ago PID 1 started (0 when /proc cannot tell)."""
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        stat = Path("/proc/1/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


class LogSink:
    """Thread-safe writer of controller lines and console bytes to one stream."""

    def __init__(self, stream: BinaryIO | None = None, origin: float | None = None) -> None:
        self.stream = stream or sys.stdout.buffer
        self.origin = origin if origin is not None else time.monotonic() - seconds_since_container_start()
        self._lock = threading.Lock()
        self._at_line_start = True

    def elapsed(self) -> float:
        return time.monotonic() - self.origin

    def line(self, text: str) -> None:
        with self._lock:
            prefix = b"" if self._at_line_start else b"\n"
            self.stream.write(prefix + f"[virtainer {self.elapsed():7.2f}s] {text}\n".encode())
            self.stream.flush()
            self._at_line_start = True

    def console(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            self.stream.write(data)
            self.stream.flush()
            self._at_line_start = data.endswith(b"\n")


class ContainerReporter:
    """The lifecycle's Reporter (virtainer.machine) writing to docker logs."""

    def __init__(self, sink: LogSink) -> None:
        self.sink = sink
        self._progress_shown: dict[str, float] = {}

    def step(self, message: str) -> None:
        self.sink.line(message)

    def stage(self, record: StageRecord) -> None:
        detail = f": {record.detail}" if record.detail else ""
        self.sink.line(f"stage {record.stage}{detail}, {record.elapsed_s:.1f} s after domain start")

    def progress(self, label: str, done: int, total: int | None) -> None:
        """A line every 5 s at most, and one at the end."""
        if total is not None and total < 256 * 2**20:
            return  # quick enough to need no progress lines
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self._progress_shown.get(label, 0.0) < 5.0:
            return
        self._progress_shown[label] = now
        amount = f"{done / 2**20:.0f} MiB" + (f" of {total / 2**20:.0f} MiB" if total else "")
        self.sink.line(f"{label}: {amount}{' done' if finished else ''}")


class ConsoleMirror(threading.Thread):
    """Copies what the guest writes to its serial port (the log file) into the sink."""

    def __init__(self, path: Path, sink: LogSink, interval_s: float = 0.2) -> None:
        super().__init__(name="console-mirror", daemon=True)
        self.path = path
        self.sink = sink
        self.interval_s = interval_s
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=2)

    def run(self) -> None:
        stream = None
        inode = None
        while True:
            stopping = self._stopping.is_set()
            if stream is None:
                try:
                    stream = self.path.open("rb")
                    inode = os.fstat(stream.fileno()).st_ino
                except FileNotFoundError:
                    stream = None
            if stream is not None:
                self.sink.console(stream.read())
                try:
                    replaced = self.path.stat().st_ino != inode
                except FileNotFoundError:
                    replaced = False
                if replaced:  # a new boot started a new log: follow it
                    self.sink.console(stream.read())
                    stream.close()
                    stream = None
                    continue
            if stopping:
                break
            self._stopping.wait(self.interval_s)
        if stream is not None:
            stream.close()
