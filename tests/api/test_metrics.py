"""GET /metrics scraped by a real Prometheus (Debian's `prometheus`, on loopback, every second)
from a real `virtainer serve` with the tiny guest; PromQL through Prometheus's HTTP API."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import ApiServer, TinyVm, free_port, stop_process
from tests.waiting import wait_until
from virtainer.hypervisor import Hypervisor

pytestmark = pytest.mark.guest
MIB = 1024 * 1024


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict[str, object]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert reply["status"] == "success", reply
        result: list[dict[str, object]] = reply["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single sample's value, or None when the query has no result (yet)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None  # type: ignore[index]


@pytest.fixture(scope="module")
def prometheus(module_vm_dir: Path, api: ApiServer) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (scripts/setup-host.sh installs it)")
    root = module_vm_dir / "prometheus"
    root.mkdir()
    token_file = root / "token"
    token_file.write_text(api.token)
    token_file.chmod(0o600)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "virtainer",
            "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
            "static_configs": [{"targets": [api.url.removeprefix("http://")]}],
        }],
    }  # fmt: skip
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}", "--log.level=warn",
    ]  # fmt: skip
    log = root / "prometheus.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
    server = Prometheus(url, process, log)
    try:
        wait_until(lambda: _ready(server), 60, "Prometheus to be ready")
        yield server
    finally:
        stop_process(process)


def _ready(server: Prometheus) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"prometheus exited {server.process.returncode}:\n{server.log.read_text()}")
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200
    return False


def run_in_guest(vm: TinyVm, command: str, marker: str, timeout_s: float = 60) -> None:
    """Type a command on the tiny guest's serial shell; wait for `marker` in its answer."""
    with Hypervisor() as hv, hv.console(vm.name) as console:
        console.write(f"\r{command}\r".encode())
        seen = bytearray()
        wait_until(lambda: seen.extend(console.read(0.5)) or marker.encode() in seen, timeout_s, marker)


def test_prometheus_scrapes_with_the_token(prometheus: Prometheus, api: ApiServer, tiny_vm: TinyVm) -> None:
    selector = f'{{job="virtainer", vm="{tiny_vm.name}"}}'
    wait_until(lambda: prometheus.value(f"virtainer_vm_state{selector[:-1]}, state=\"running\"}}") == 1.0, 30,
               "Prometheus to see the VM running")  # fmt: skip
    assert prometheus.value('up{job="virtainer"}') == 1.0
    assert (prometheus.value(f"virtainer_vm_memory_maximum_bytes{selector}") or 0) == 256 * MIB
    assert (prometheus.value(f"virtainer_vm_memory_rss_bytes{selector}") or 0) > 10 * MIB
    assert (prometheus.value(f"virtainer_vm_diff_disk_bytes{selector}") or 0) > 0
    assert prometheus.value(f"virtainer_vm_snapshots{selector}") == 0.0
    assert prometheus.value(f'virtainer_vm_readiness_stage_seconds{selector[:-1]}, stage="running"}}') is not None
    # the server's own: Prometheus's scrapes are requests of route /metrics
    wait_until(lambda: (prometheus.value('sum(virtainer_api_requests_total{route="/metrics", status="200"})') or 0)
               >= 2, 20, "scrapes counted")  # fmt: skip
    assert prometheus.value("virtainer_api_event_stream_clients") == 0.0
    assert httpx.get(api.url + "/metrics", timeout=10).status_code == 401  # the default: token needed


def test_cpu_time_rises_while_the_guest_works(prometheus: Prometheus, tiny_vm: TinyVm) -> None:
    cpu = f'virtainer_vm_cpu_seconds_total{{vm="{tiny_vm.name}"}}'
    wait_until(lambda: prometheus.value(cpu) is not None, 30, "the VM's CPU time in Prometheus")
    before = prometheus.value(cpu) or 0.0
    # about 8 s of busy loop in the guest's shell, answered when done
    run_in_guest(tiny_vm, "e=$(($(date +%s)+8)); while [ $(date +%s) -lt $e ]; do :; done; echo WORKED-$((6*7))",
                 "WORKED-42")  # fmt: skip
    # while it worked, QEMU's CPU time grew by a good part of a CPU second per second
    busy = prometheus.value(f"max_over_time(rate({cpu}[3s])[15s:1s])") or 0.0
    assert busy > 0.2, f"CPU rate while working: {busy:.3f} s/s"
    wait_until(lambda: (prometheus.value(cpu) or 0.0) > before + 1.0, 20, "the CPU time to rise by 1 s")


def test_block_write_bytes_rise_after_a_write_in_the_guest(prometheus: Prometheus, tiny_vm: TinyVm) -> None:
    written = f'virtainer_vm_block_write_bytes_total{{vm="{tiny_vm.name}", disk="vda"}}'
    requests = f'virtainer_vm_block_write_requests_total{{vm="{tiny_vm.name}", disk="vda"}}'
    wait_until(lambda: prometheus.value(written) is not None, 30, "the disk's write bytes in Prometheus")
    before, before_requests = prometheus.value(written) or 0.0, prometheus.value(requests) or 0.0
    # 2 MiB at 4 MiB into the diff (the boot counter and the marker live in the first 8 KiB)
    run_in_guest(tiny_vm, "dd if=/dev/zero of=/dev/vda bs=64k count=32 seek=64 conv=fsync 2>/dev/null; "
                 "echo WROTE-$((1+1))", "WROTE-2")  # fmt: skip
    wait_until(lambda: (prometheus.value(written) or 0.0) >= before + 2 * MIB, 20, "2 MiB more written, in Prometheus")
    assert (prometheus.value(requests) or 0.0) > before_requests


def test_promtool_finds_no_problems(api: ApiServer, tiny_vm: TinyVm) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus) is not installed")
    with api.client() as client:
        reply = client.get("/metrics")
    assert reply.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }
    assert ("virtainer_vm_cpu_seconds_total", (("vm", tiny_vm.name),)) in samples
    assert ("virtainer_vm_block_read_bytes_total", (("disk", "vda"), ("vm", tiny_vm.name))) in samples
    checked = subprocess.run([promtool, "check", "metrics"], input=reply.content, capture_output=True,
                             timeout=30, env={**os.environ, "LC_ALL": "C"})  # fmt: skip
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
