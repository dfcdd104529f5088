"""Metric families from libvirt's bulk stats (pure), and /metrics on libvirt's in-process test driver
(test:///default: no daemon); the real scrape by a real Prometheus is tests/api/test_metrics.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from virtainer.api.app import create_app
from virtainer.api.metrics import VmExtras, build_families
from virtainer.api.settings import ApiSettings
from virtainer.hypervisor import DomainState, DomainStats

TOKEN = "unit-metrics-" + "x" * 16
STATS = {
    "state.state": 1, "cpu.time": 2_500_000_000, "vcpu.current": 2, "vcpu.maximum": 2,
    "vcpu.0.time": 1_000_000_000, "vcpu.1.time": 500_000_000,
    "balloon.current": 262144, "balloon.maximum": 262144, "balloon.rss": 102400,
    "block.count": 2, "block.0.name": "vda", "block.0.backingIndex": 2, "block.0.rd.bytes": 4096,
    "block.0.wr.bytes": 8192, "block.0.rd.reqs": 1, "block.0.wr.reqs": 2,
    "block.1.name": "hdc", "block.1.rd.bytes": 100, "block.1.wr.bytes": 0, "block.1.rd.reqs": 3, "block.1.wr.reqs": 0,
    "net.count": 1, "net.0.name": "vnet3", "net.0.rx.bytes": 10, "net.0.tx.bytes": 20, "net.0.rx.pkts": 1,
    "net.0.tx.pkts": 2,
}  # fmt: skip


def samples(families: list) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def test_families_convert_units_and_label_each_disk_and_nic() -> None:
    extras = VmExtras("tcg", [("running", 0.8), ("ssh", 12.5)], 1 << 20, {"before": 0, "mem": 300 << 20})
    found = samples(build_families([(DomainStats("vm", DomainState.RUNNING, STATS), extras)]))
    vm = (("vm", "vm"),)
    assert found[("virtainer_vm_state", (("state", "running"), *vm))] == 1.0
    assert found[("virtainer_vm_state", (("state", "shut-off"), *vm))] == 0.0
    assert found[("virtainer_vm_cpu_seconds_total", vm)] == 2.5
    assert found[("virtainer_vm_vcpu_seconds_total", (("vcpu", "1"), *vm))] == 0.5
    assert found[("virtainer_vm_memory_rss_bytes", vm)] == 100 * 1024 * 1024
    assert found[("virtainer_vm_block_write_bytes_total", (("disk", "vda"), *vm))] == 8192
    assert found[("virtainer_vm_block_read_requests_total", (("disk", "hdc"), *vm))] == 3
    assert found[("virtainer_vm_network_transmit_packets_total", (("interface", "vnet3"), *vm))] == 2
    assert found[("virtainer_vm_readiness_stage_seconds", (("stage", "ssh"), *vm))] == 12.5
    assert found[("virtainer_vm_snapshots", vm)] == 2
    assert found[("virtainer_vm_snapshot_memory_bytes", (("snapshot", "mem"), *vm))] == 300 << 20
    assert found[("virtainer_vm_diff_disk_bytes", vm)] == 1 << 20
    assert found[("virtainer_vm_info", (("accelerator", "tcg"), *vm))] == 1.0
    assert ("virtainer_vm_memory_balloon_unused_bytes", vm) not in found  # the guest did not report it


def serve_test_driver(tmp_path: Path, **settings: object) -> TestClient:
    values = {"libvirt_uri": "test:///default", "token": TOKEN, "token_file": tmp_path / "token", **settings}
    return TestClient(create_app(ApiSettings.build(**values)))


def test_metrics_need_the_token_by_default(tmp_path: Path) -> None:
    with serve_test_driver(tmp_path) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        reply = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(list(text_string_to_metric_families(reply.text)))
    assert found[("virtainer_vm_state", (("state", "running"), ("vm", "test")))] == 1.0
    # refused by the gate before routing: counted, without a route
    assert found[("virtainer_api_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "401")))] == 2


def test_metrics_open_when_configured_and_promtool_clean(tmp_path: Path) -> None:
    with serve_test_driver(tmp_path, metrics_auth=False) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        client.get("/v1/vms/test", headers=auth)
        client.get("/v1/vms/no-such-vm", headers=auth)
        reply = client.get("/metrics")  # no token: open to scrapers with metrics_auth false
    assert reply.status_code == 200
    found = samples(list(text_string_to_metric_families(reply.text)))
    # by route template, never by the raw path
    route = (("method", "GET"), ("route", "/v1/vms/{name}"))
    assert found[("virtainer_api_requests_total", (*route, ("status", "404")))] == 1
    assert found[("virtainer_api_request_duration_seconds_count", (*route, ("status", "200")))] == 1
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus, scripts/setup-host.sh) is not installed")
    checked = subprocess.run([promtool, "check", "metrics"], input=reply.content, capture_output=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
