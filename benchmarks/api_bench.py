"""REST API benchmark: GET /v1/vms/{name} latency under 200 concurrent clients, and snapshot
create/revert times for a guest with 512 MiB written to its diff. Prints numbers; not a test.

    .venv/bin/python benchmarks/api_bench.py [--clients 200] [--seconds 20] [--rounds 3]

One tiny guest (direct kernel boot, 256 MiB RAM) runs on a 1 GiB diff into which qemu-io wrote
512 MiB of data before boot. `virtainer serve` runs in its own process; the load generator runs
in another (raw HTTP/1.1 keep-alive over asyncio, so the client's own cost stays small): each
client sends its next request when the previous answer arrived and its pace allows.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.conftest import booted_tiny, serving  # noqa: E402
from tests.guests import tiny_guest  # noqa: E402
from virtainer import machine, storage  # noqa: E402
from virtainer.hypervisor import Hypervisor  # noqa: E402

WRITTEN = "512M"


# -- load generator (runs in a child process) ---------------------------------------------------


async def _client(host: str, port: int, path: str, until: float, period_s: float, out: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    errors = 0
    await asyncio.sleep(random.uniform(0, period_s))  # spread the clients' phases
    next_at = time.monotonic()
    while time.monotonic() < until:
        sent = time.monotonic()
        writer.write(request)
        status, length = await _read_head(reader)
        await reader.readexactly(length)
        out.append(time.monotonic() - sent)
        errors += status != 200
        next_at = max(next_at + period_s, time.monotonic()) if period_s else time.monotonic()
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    writer.close()
    return errors


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:"))
    return status, length


def _load(url: str, path: str, clients: int, seconds: float, period_s: float, queue: multiprocessing.Queue) -> None:
    host, port = url.removeprefix("http://").split(":")

    async def main() -> tuple[list[float], int]:
        until = time.monotonic() + seconds
        latencies: list[float] = []
        errors = await asyncio.gather(
            *(_client(host, int(port), path, until, period_s, latencies) for _ in range(clients)),
            return_exceptions=True,
        )
        return latencies, sum(e if isinstance(e, int) else 1 for e in errors)

    queue.put(asyncio.run(main()))


def measure_gets(url: str, path: str, clients: int, seconds: float, period_s: float) -> dict[str, float]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    worker = multiprocessing.Process(target=_load, args=(url, path, clients, seconds, period_s, queue))
    worker.start()
    latencies, errors = queue.get(timeout=seconds + 120)
    worker.join()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return {
        "requests": len(ordered), "errors": errors, "rate/s": len(ordered) / seconds,
        "p50 ms": pct(50), "p95 ms": pct(95), "p99 ms": pct(99), "max ms": ordered[-1] * 1000,
    }  # fmt: skip


# -- snapshots ------------------------------------------------------------------------------------


def timed(http: httpx.Client, method: str, path: str, expected: int, **kwargs: object) -> float:
    started = time.monotonic()
    response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    if response.status_code != expected:
        raise SystemExit(f"{method} {path}: {response.status_code} {response.text}")
    return elapsed


def measure_snapshots(http: httpx.Client, vm: str, rounds: int) -> dict[str, list[float]]:
    base = f"/v1/vms/{vm}"
    times: dict[str, list[float]] = {}
    cases = [
        ("disk, running", "disk", "running"),
        ("memory, running", "memory", "running"),
        ("disk, stopped", "disk", "stopped"),
    ]
    for label, kind, state in cases:
        if state == "stopped":
            http.post(f"{base}/destroy")
        for index in range(rounds):
            name = f"bench-{kind}-{state}-{index}"
            body = {"name": name, "kind": kind}
            times.setdefault(f"create {label}", []).append(timed(http, "POST", f"{base}/snapshots", 201, json=body))
            times.setdefault(f"revert {label}", []).append(timed(http, "POST", f"{base}/snapshots/{name}/revert", 200))
            times.setdefault(f"delete {label}", []).append(timed(http, "DELETE", f"{base}/snapshots/{name}", 204))
    return times


def write_into_diff(diff: Path, amount: str) -> None:
    """512 MiB of data in the diff's own clusters (offset 16 MiB: the guest's boot counter is at 0)."""
    command = ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 16M {amount}", str(diff)]
    subprocess.run(command, check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--period", type=float, default=1.0, help="each client's request interval, s (paced run)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="api-bench-", dir="/var/tmp"))
    root.chmod(0o755)
    token = "bench-" + secrets.token_hex(12)
    tiny_guest()
    spec_dir = root / "vm"
    spec_dir.mkdir(mode=0o755)
    try:
        run_benchmarks(args, spec_dir, token)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def run_benchmarks(args: argparse.Namespace, spec_dir: Path, token: str) -> None:
    with booted_tiny(spec_dir, prefix="bench") as vm:
        with Hypervisor() as hv:  # grow the diff to 1 GiB and fill 512 MiB of it, then boot again
            machine.destroy(hv, vm.name)
            storage.grow_diff(vm.spec.diff_path, 1024)
            write_into_diff(vm.spec.diff_path, WRITTEN)
            hv.start(vm.name)
        allocated = int(storage.image_info(vm.spec.diff_path)["actual-size"]) >> 20  # type: ignore[call-overload]
        print(f"guest {vm.name}: diff {vm.spec.diff_path} holds {allocated} MiB ({WRITTEN} written)")
        with serving(spec_dir, vm.name, token=token) as api, api.client(timeout=300) as http:
            path = f"/v1/vms/{vm.name}"
            http.get(path)
            print(f"\nGET {path}, {args.clients} concurrent clients, {args.seconds:.0f} s each run")
            for label, period in (("paced", args.period), ("closed loop", 0.0)):
                result = measure_gets(api.url, path, args.clients, args.seconds, period)
                pace = f"1 request / {period:g} s per client" if period else "next request as soon as answered"
                print(f"  {label:11} ({pace}): " + ", ".join(f"{key} {value:.1f}" for key, value in result.items()))
            print(f"\nsnapshots ({args.rounds} rounds each; seconds, through the API)")
            for label, values in measure_snapshots(http, vm.name, args.rounds).items():
                shown = " ".join(f"{value:.2f}" for value in values)
                print(f"  {label:24} median {statistics.median(values):.2f}  max {max(values):.2f}   [{shown}]")


if __name__ == "__main__":
    sys.exit(main())
