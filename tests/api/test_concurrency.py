"""A long graceful stop: the API keeps answering, conflicting operations get 409 at once.

The guest boots with acpi=off, so it ignores the power button and the stop runs to its timeout.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ApiServer, TinyVm, booted_tiny, serving
from tests.guests import TINY_CMDLINE
from tests.waiting import wait_until

pytestmark = pytest.mark.guest
STOP_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def deaf_vm(module_vm_dir: Path) -> Iterator[TinyVm]:
    with booted_tiny(module_vm_dir, prefix="deaf", cmdline=TINY_CMDLINE + " acpi=off") as vm:
        yield vm


@pytest.fixture(scope="module")
def deaf_api(module_vm_dir: Path, deaf_vm: TinyVm) -> Iterator[ApiServer]:
    with serving(module_vm_dir, deaf_vm.name, token="conc-" + secrets.token_hex(12)) as server:
        yield server


def test_requests_are_served_and_conflicts_refused_during_a_long_stop(deaf_api: ApiServer, deaf_vm: TinyVm) -> None:
    vm = f"/v1/vms/{deaf_vm.name}"
    outcome: dict[str, httpx.Response] = {}

    def stop() -> None:
        with deaf_api.client() as http:
            outcome["stop"] = http.post(f"{vm}/stop", json={"timeout_s": STOP_TIMEOUT_S})

    stopper = threading.Thread(target=stop)
    started = time.monotonic()
    stopper.start()
    with deaf_api.client() as http:
        wait_until(lambda: http.get(vm).json()["operation"] == "stop", 5, "the stop to be in progress", 0.05)

        latencies = []
        for _ in range(40):
            before = time.monotonic()
            assert http.get(vm).status_code == 200
            assert http.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - before)
        assert http.get(f"{vm}/snapshots").status_code == 200

        for method, path, body in [
            ("POST", f"{vm}/snapshots", {"name": "during-stop"}),
            ("POST", f"{vm}/stop", None),
            ("POST", f"{vm}/destroy", None),
            ("POST", f"{vm}/reboot", None),
            ("POST", f"{vm}/start", None),
        ]:
            refused = http.request(method, path, json=body)
            assert refused.status_code == 409, (path, refused.text)
            assert "busy: stop in progress" in refused.json()["error"]["message"]
        still_stopping = time.monotonic() - started < STOP_TIMEOUT_S
    stopper.join(STOP_TIMEOUT_S + 30)

    assert still_stopping, "the checks above must run while the stop is still going on"
    assert max(latencies) < 1.0 and statistics.median(latencies) < 0.1, latencies
    result = outcome["stop"].json()
    assert outcome["stop"].status_code == 200
    assert (result["state"], result["method"], result["graceful"]) == ("shut-off", "destroy", False)
    assert result["elapsed_s"] >= STOP_TIMEOUT_S
    with deaf_api.client() as http:  # serialised, not lost: the next operation is accepted
        assert http.get(vm).json()["operation"] is None
        assert http.post(f"{vm}/snapshots", json={"name": "after-stop"}).status_code == 201
        assert http.post(f"{vm}/start").status_code == 200


def test_parallel_snapshot_requests_one_wins_the_rest_conflict(deaf_api: ApiServer, deaf_vm: TinyVm) -> None:
    vm = f"/v1/vms/{deaf_vm.name}"
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def create(index: int) -> None:
        with deaf_api.client() as http:
            barrier.wait()
            statuses.append(http.post(f"{vm}/snapshots", json={"name": f"race-{index}", "kind": "memory"}).status_code)

    threads = [threading.Thread(target=create, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses)[0] == 201 and set(statuses) <= {201, 409}
    with deaf_api.client() as http:
        made = [snap["name"] for snap in http.get(f"{vm}/snapshots").json() if snap["name"].startswith("race-")]
    assert len(made) == statuses.count(201)
