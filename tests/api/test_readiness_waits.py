"""Readiness waits never occupy the threads that serve requests: after eight reverts of a VM
that never gets ready (it waits for an address it cannot get: no network), reads still answer
at once. Each revert starts a wait of up to the boot timeout; a new one cancels the previous."""

from __future__ import annotations

import contextlib
import secrets
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import TinyVm, serving, tiny_spec
from tests.conftest import forget_domain, unique_name
from tests.guests import tiny_guest
from tests.waiting import wait_until
from virtainer import machine
from virtainer.hypervisor import Hypervisor
from virtainer.spec import spec_with

pytestmark = pytest.mark.guest
REVERTS = 8


@pytest.fixture(scope="module")
def never_ready(module_vm_dir: Path) -> Iterator[TinyVm]:
    guest = tiny_guest()
    name = unique_name("never")
    spec = spec_with(tiny_spec(name, module_vm_dir, guest), wait_for=("running", "ip"))
    try:
        with Hypervisor() as hv:
            machine.up(spec, hv, wait=False)
        vm = TinyVm(name, spec, guest)
        wait_until(vm.booted, 60, "the tiny guest's GUEST-READY")
        yield vm
    finally:
        forget_domain(name)
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["virsh", "-q", "undefine", name, "--snapshots-metadata"], capture_output=True, timeout=30)


def test_reads_answer_after_eight_reverts_of_a_vm_that_never_gets_ready(
    never_ready: TinyVm, module_vm_dir: Path
) -> None:
    token = "waits-" + secrets.token_hex(12)
    path = f"/v1/vms/{never_ready.name}"
    with serving(module_vm_dir, never_ready.name, token=token) as api, api.client(timeout=120) as http:
        assert http.post(f"{path}/snapshots", json={"name": "again"}).status_code == 201
        for _ in range(REVERTS):
            reverted = http.post(f"{path}/snapshots/again/revert")
            assert reverted.status_code == 200 and reverted.json()["state"] == "running", reverted.text
        took = []
        with api.client(timeout=10) as reader:  # on a server whose threads all wait, this times out
            for _ in range(5):
                started = time.monotonic()
                status = reader.get(path)
                took.append(time.monotonic() - started)
                assert status.status_code == 200, status.text
                assert status.json()["readiness"]["ready"] is False  # it really never got ready
                assert reader.get(f"{path}/snapshots").status_code == 200
        print(f"GET {path} after {REVERTS} reverts: median {statistics.median(took):.3f} s, max {max(took):.3f} s")
        assert statistics.median(took) < 1.0, took
