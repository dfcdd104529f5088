"""What libvirt's start-up questions cost QEMU, without libvirt.

Between QEMU's start and the vCPUs' first instruction, libvirt 9.0 reads the guest CPU back one
property at a time: a `qom-list` of the first vCPU, then one `qom-get` per boolean property (~400
on x86, whatever the domain's `<cpu>` says). This starts QEMU paused (`-S`, TCG, no devices),
asks the same questions on its QMP socket, and prints the wall time and QEMU's CPU for them,
without and with libvirt's `-sandbox` (seccomp) options, in interleaved rounds:

    .venv/bin/python benchmarks/qemu_cpu_queries.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CPU_PATH = "/machine/unattached/device[0]"
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"  # libvirt's


class Qmp:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.stream = self.sock.makefile("rw")
        self.stream.readline()  # the greeting
        self.call("qmp_capabilities")

    def call(self, command: str, **arguments: Any) -> Any:
        message = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.stream.write(json.dumps(message) + "\n")
        self.stream.flush()
        while True:  # events may come before the answer
            reply = json.loads(self.stream.readline())
            if "return" in reply or "error" in reply:
                return reply.get("return")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(sandbox: bool) -> tuple[int, float, float]:
    """(queries, wall s, QEMU's CPU s) of the questions libvirt asks about the guest CPU."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "qmp.sock"
        argv = ["qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "pc,accel=tcg",
                "-smp", "2", "-m", "1024", "-qmp", f"unix:{path},server=on,wait=off"]  # fmt: skip
        qemu = subprocess.Popen([*argv, *(["-sandbox", SANDBOX] if sandbox else [])], stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not path.exists():
                if time.monotonic() > deadline or qemu.poll() is not None:
                    raise SystemExit("QEMU did not open its QMP socket")
                time.sleep(0.005)
            qmp = Qmp(path)
            started, cpu_before = time.monotonic(), cpu_seconds(qemu.pid)
            properties = [item["name"] for item in qmp.call("qom-list", path=CPU_PATH) if item["type"] == "bool"]
            for name in properties:
                qmp.call("qom-get", path=CPU_PATH, property=name)
            return len(properties) + 1, time.monotonic() - started, cpu_seconds(qemu.pid) - cpu_before
        finally:
            qemu.kill()
            qemu.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[bool, list[tuple[int, float, float]]] = {False: [], True: []}
    for index in range(args.rounds):
        for sandbox in (False, True) if index % 2 == 0 else (True, False):
            results[sandbox].append(one_round(sandbox))
    for sandbox, rounds in results.items():
        queries = rounds[0][0]
        wall = statistics.median(r[1] for r in rounds)
        cpu = statistics.median(r[2] for r in rounds)
        label = "with -sandbox" if sandbox else "no -sandbox  "
        print(
            f"{label}: {queries} queries, {wall:.3f} s wall, QEMU {cpu:.2f} s CPU ({cpu / queries * 1000:.2f} ms a"
            f" query; medians of {len(rounds)}, CPU {min(r[2] for r in rounds):.2f}-{max(r[2] for r in rounds):.2f})"
        )


if __name__ == "__main__":
    main()
