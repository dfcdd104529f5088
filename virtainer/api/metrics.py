"""Prometheus metrics: per-VM counters read from libvirt in bulk, and the API server's own.

- `VmCollector` is a custom prometheus-client Collector: one `getAllDomainStats` round trip plus
  a few file reads per scrape, cached for `metrics_ttl_s` so that several scrapers (or a fast
  one) cost libvirt one read. It runs in the caller's thread: the /metrics route calls it on the
  backend's thread pool, never on the event loop.
- `ApiMetrics` holds the server's request counters and latency histograms (by route template,
  method and status), recorded by `RequestMetrics`, a plain ASGI middleware (streaming responses
  pass through it untouched), and the number of event-stream clients.

Names follow Prometheus conventions: `virtainer_` prefix, counters end in `_total`, times in
`_seconds`, sizes in `_bytes`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtainer import storage
from virtainer.errors import VirtainerError
from virtainer.hypervisor import DomainState, DomainStats, Hypervisor
from virtainer.readiness import Readiness

KIB = 1024
NS = 1e-9
# latency buckets for an API whose reads are cached (ms) and whose operations take seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# (metric suffix, libvirt per-device field, help): block and NIC counters
BLOCK_COUNTERS = (
    ("block_read_bytes_total", "rd.bytes", "Bytes read from the disk"),
    ("block_write_bytes_total", "wr.bytes", "Bytes written to the disk"),
    ("block_read_requests_total", "rd.reqs", "Read operations on the disk"),
    ("block_write_requests_total", "wr.reqs", "Write operations on the disk"),
)
NET_COUNTERS = (
    ("network_receive_bytes_total", "rx.bytes", "Bytes the NIC received"),
    ("network_transmit_bytes_total", "tx.bytes", "Bytes the NIC sent"),
    ("network_receive_packets_total", "rx.pkts", "Packets the NIC received"),
    ("network_transmit_packets_total", "tx.pkts", "Packets the NIC sent"),
)
# (metric suffix, balloon field in KiB, help)
MEMORY_GAUGES = (
    ("memory_current_bytes", "balloon.current", "Memory the guest has now (after the balloon)"),
    ("memory_maximum_bytes", "balloon.maximum", "Memory the VM is configured with at most"),
    ("memory_rss_bytes", "balloon.rss", "Resident set size of the VM's QEMU process"),
    ("memory_balloon_available_bytes", "balloon.available", "Memory the guest's balloon driver reports usable"),
    ("memory_balloon_unused_bytes", "balloon.unused", "Memory the guest's balloon driver reports unused"),
)


@dataclass(frozen=True)
class VmExtras:
    """What libvirt's stats do not say: virtainer's own records beside the diff."""

    accelerator: str
    stages: list[tuple[str, float]]  # (stage, seconds from start) of the last boot
    diff_bytes: int | None  # allocated on disk
    snapshots: dict[str, int]  # name -> saved memory state bytes (0: disk only)


class VmCollector(Collector):
    """Per-VM metrics, from `hypervisor()` (called on the scraping thread)."""

    def __init__(self, hypervisor: Callable[[], Hypervisor], vms: tuple[str, ...], ttl_s: float) -> None:
        self._hypervisor = hypervisor
        self._vms = vms
        self._ttl_s = ttl_s
        self._lock = threading.Lock()  # single flight: concurrent scrapes share one read
        self._cached: tuple[float, list[Metric]] | None = None
        self._snapshot_sizes: dict[tuple[str, tuple[str, ...]], dict[str, int]] = {}

    def describe(self) -> list[Metric]:
        return []  # dynamic: the registry must not call collect() at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] >= self._ttl_s:
                self._cached = (time.monotonic(), self._read())
            families = self._cached[1]
        yield from families

    def _read(self) -> list[Metric]:
        started = time.perf_counter()
        hv = self._hypervisor()
        samples = [(stats, self._extras(hv, stats)) for stats in hv.all_domain_stats(self._vms)]
        families = build_families(samples)
        took = GaugeMetricFamily(
            "virtainer_metrics_collect_duration_seconds", "Time the last read of the VMs' metrics from libvirt took"
        )
        took.add_metric([], time.perf_counter() - started)
        return [*families, took]

    def _extras(self, hv: Hypervisor, stats: DomainStats) -> VmExtras:
        try:
            metadata = hv.metadata(stats.name)
        except VirtainerError:
            metadata = {}
        stages: list[tuple[str, float]] = []
        if state_dir := metadata.get("state-dir"):
            readiness = Readiness.load(Path(state_dir) / "readiness.json")
            stages = [(record.stage, record.elapsed_s) for record in readiness.records()] if readiness else []
        diff = Path(metadata["diff"]) if metadata.get("diff") else None
        diff_bytes = None
        if diff is not None:
            with contextlib.suppress(OSError):
                diff_bytes = diff.stat().st_blocks * 512
        return VmExtras(metadata.get("accelerator", ""), stages, diff_bytes, self._snapshots(hv, stats.name, diff))

    def _snapshots(self, hv: Hypervisor, vm: str, diff: Path | None) -> dict[str, int]:
        """Snapshot names from libvirt; their saved memory sizes from the diff (qemu-img, only
        when the set of names changed: a snapshot's size never does)."""
        try:
            names = tuple(sorted(hv.snapshot_names(vm)))
        except VirtainerError:
            return {}
        if diff is None or not names:
            return dict.fromkeys(names, 0)
        key = (str(diff), names)
        if key not in self._snapshot_sizes:
            sizes = dict.fromkeys(names, 0)
            with contextlib.suppress(VirtainerError, OSError, ValueError):
                for item in storage.image_info(diff).get("snapshots") or []:  # type: ignore[attr-defined]
                    if isinstance(item, dict) and item.get("name") in sizes:
                        sizes[str(item["name"])] = int(item.get("vm-state-size") or 0)
            self._snapshot_sizes = {k: v for k, v in self._snapshot_sizes.items() if k[0] != str(diff)}
            self._snapshot_sizes[key] = sizes
        return self._snapshot_sizes[key]


def build_families(samples: Iterable[tuple[DomainStats, VmExtras]]) -> list[Metric]:
    """The per-VM metric families from libvirt's stats and virtainer's records (pure)."""
    state = GaugeMetricFamily("virtainer_vm_state", "1 for the state the VM is in, 0 otherwise", labels=["vm", "state"])
    info = GaugeMetricFamily("virtainer_vm_info", "Always 1; the VM's accelerator", labels=["vm", "accelerator"])
    cpu = CounterMetricFamily("virtainer_vm_cpu_seconds", "CPU time the VM's QEMU used", labels=["vm"])
    vcpus = GaugeMetricFamily("virtainer_vm_vcpus", "vCPUs the VM runs with", labels=["vm"])
    vcpu = CounterMetricFamily("virtainer_vm_vcpu_seconds", "CPU time of each vCPU", labels=["vm", "vcpu"])
    memory = {
        key: GaugeMetricFamily(f"virtainer_vm_{suffix}", text, labels=["vm"]) for suffix, key, text in MEMORY_GAUGES
    }
    block = {
        key: CounterMetricFamily(f"virtainer_vm_{suffix.removesuffix('_total')}", text, labels=["vm", "disk"])
        for suffix, key, text in BLOCK_COUNTERS
    }
    net = {
        key: CounterMetricFamily(f"virtainer_vm_{suffix.removesuffix('_total')}", text, labels=["vm", "interface"])
        for suffix, key, text in NET_COUNTERS
    }
    stage = GaugeMetricFamily(
        "virtainer_vm_readiness_stage_seconds",
        "Seconds from the last start to each readiness stage it reached",
        labels=["vm", "stage"],
    )
    snapshot_count = GaugeMetricFamily("virtainer_vm_snapshots", "Snapshots kept in the VM's diff", labels=["vm"])
    snapshot_bytes = GaugeMetricFamily(
        "virtainer_vm_snapshot_memory_bytes",
        "Saved memory state of each snapshot (0 for a disk-only snapshot)",
        labels=["vm", "snapshot"],
    )
    diff = GaugeMetricFamily("virtainer_vm_diff_disk_bytes", "Space the VM's qcow2 diff takes on disk", labels=["vm"])

    for stats, extras in samples:
        vm, values = stats.name, stats.values
        for each in DomainState:
            if each != DomainState.UNDEFINED:
                state.add_metric([vm, each.value], 1.0 if stats.state == each else 0.0)
        info.add_metric([vm, extras.accelerator or "unknown"], 1.0)
        if "cpu.time" in values:
            cpu.add_metric([vm], values["cpu.time"] * NS)
        if "vcpu.current" in values:
            vcpus.add_metric([vm], float(values["vcpu.current"]))
        for index in range(int(values.get("vcpu.maximum", 0))):
            if f"vcpu.{index}.time" in values:
                vcpu.add_metric([vm, str(index)], values[f"vcpu.{index}.time"] * NS)
        for key, gauge in memory.items():
            if key in values:
                gauge.add_metric([vm], float(values[key]) * KIB)
        for group, counters in (("block", block), ("net", net)):
            for device, fields in _devices(values, group):
                for key, counter in counters.items():
                    if key in fields:
                        counter.add_metric([vm, device], float(fields[key]))
        for name, elapsed in extras.stages:
            stage.add_metric([vm, name], elapsed)
        snapshot_count.add_metric([vm], float(len(extras.snapshots)))
        for name, size in sorted(extras.snapshots.items()):
            snapshot_bytes.add_metric([vm, name], float(size))
        if extras.diff_bytes is not None:
            diff.add_metric([vm], float(extras.diff_bytes))
    return [
        state, info, cpu, vcpus, vcpu, *memory.values(), *block.values(), *net.values(),
        stage, snapshot_count, snapshot_bytes, diff,
    ]  # fmt: skip


def _devices(values: dict[str, Any], group: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(device name, its fields) for libvirt's numbered "block.N.*" / "net.N.*" keys: one entry per
    disk and NIC (backing images are listed only when asked for, which we do not)."""
    for index in range(int(values.get(f"{group}.count", 0))):
        prefix = f"{group}.{index}."
        fields = {key[len(prefix) :]: value for key, value in values.items() if key.startswith(prefix)}
        yield str(fields.get("name", index)), fields


class ApiMetrics:
    """The API server's registry: request counts, latencies, event-stream clients, and the VMs."""

    def __init__(self, vm_collector: VmCollector | None, event_clients: Callable[[], int]) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double every counter's output
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ["method", "route", "status"]
        self.requests = Counter("virtainer_api_requests", "API requests answered", labels, registry=self.registry)
        self.latency = Histogram(
            "virtainer_api_request_duration_seconds",
            "Time from a request's arrival to its response headers",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        clients = Gauge("virtainer_api_event_stream_clients", "Open /v1/events streams", registry=self.registry)
        clients.set_function(lambda: float(event_clients()))
        if vm_collector is not None:
            self.registry.register(vm_collector)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)


class RequestMetrics:
    """ASGI middleware: counts each HTTP request by its route template (never the raw path, so
    VM names typed by anyone cannot grow the label set) and times it to its response headers."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered: list[tuple[int, float]] = []

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not answered:
                answered.append((int(message["status"]), time.perf_counter() - started))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            status, seconds = answered[0] if answered else (500, time.perf_counter() - started)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope.get("method", ""), route, status, seconds)
