"""The core's operations on libvirt's in-process test driver: `up` writes the diff, the seed and the
records and defines and starts the domain; stop, destroy, status and the snapshot operations run
their state rules against it. No daemon, no root (the fast tier, scripts/test-fast.sh); the same
paths on real guests are tests/integration and tests/api."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.driver import TEST_DRIVER, DriverVm, driver_spec, driver_vm
from virtainer import machine, operations, snapshots, storage
from virtainer.errors import ConflictError, NotFoundError
from virtainer.hypervisor import DomainState, Hypervisor


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    with Hypervisor(TEST_DRIVER) as connection:
        yield connection


@pytest.fixture
def vm(tmp_path: Path, hv: Hypervisor) -> Iterator[DriverVm]:
    with driver_vm(tmp_path, hv) as made:
        yield made


def test_up_writes_the_vm_files_then_defines_and_starts_the_domain(vm: DriverVm, hv: Hypervisor) -> None:
    spec = vm.spec
    assert hv.state(vm.name) == DomainState.RUNNING
    assert not vm.result.reused_diff and vm.result.readiness.ready
    diff = storage.image_info(spec.diff_path)
    assert diff["format"] == "qcow2" and Path(str(diff["backing-filename"])) == vm.base
    record = storage.BaseRecord.from_json(spec.base_record_path.read_text())
    assert record.identity == storage.base_identity(vm.base) and record.path == str(vm.base)
    assert stat.S_IMODE(spec.generated_seed_path.stat().st_mode) == 0o600
    assert spec.password_path.read_text().strip() == vm.result.generated_password  # no keys: a random one
    # what was defined is what was written beside the diff, with the MAC recorded there
    assert hv.xml(vm.name, inactive=True).count(str(spec.diff_path)) >= 1
    (mac,) = re.findall(r'<mac address="([^"]+)"', spec.domain_xml_path.read_text())
    assert mac == storage.saved_mac(spec)
    assert hv.metadata(vm.name)["diff"] == str(spec.diff_path)


def test_up_of_a_running_vm_reuses_it_and_writes_nothing(vm: DriverVm, hv: Hypervisor) -> None:
    before = {path: path.stat().st_mtime_ns for path in vm.spec.diff_path.parent.rglob("*") if path.is_file()}
    again = machine.up(vm.spec, hv)
    assert again.reused_diff and hv.state(vm.name) == DomainState.RUNNING
    after = {path: path.stat().st_mtime_ns for path in vm.spec.diff_path.parent.rglob("*") if path.is_file()}
    changed = {path.name for path in before if after.get(path) != before[path]}
    assert changed <= {"readiness.json"}, changed


def test_up_on_another_diff_while_running_is_refused(vm: DriverVm, hv: Hypervisor, tmp_path: Path) -> None:
    other = driver_spec(tmp_path / "other", vm.name, vm.base)
    with pytest.raises(ConflictError, match="is running on diff"):
        machine.up(other, hv)
    assert not other.diff_path.exists()


def test_stop_then_up_again_keeps_the_diff_and_the_mac(vm: DriverVm, hv: Hypervisor) -> None:
    mac = storage.saved_mac(vm.spec)
    # the test driver refuses ACPI's power button: the stop ends in destroy and says so
    done = machine.stop(hv, vm.name, timeout_s=5)
    assert hv.state(vm.name) == DomainState.SHUT_OFF
    assert (done.method, done.graceful) in {("acpi", True), ("destroy", False)}
    again = machine.up(vm.spec, hv)
    assert again.reused_diff and hv.state(vm.name) == DomainState.RUNNING
    assert storage.saved_mac(vm.spec) == mac


def test_status_reports_resources_diff_and_base(vm: DriverVm, hv: Hypervisor) -> None:
    status = operations.status(hv, vm.name, guest_facts=False)
    assert (status.state, status.vcpus, status.memory_mib) == (DomainState.RUNNING, vm.spec.vcpus, vm.spec.memory_mib)
    assert status.diff.path == str(vm.spec.diff_path) and status.accelerator == "tcg"
    assert status.diff.base is not None and status.diff.base.path == str(vm.base)
    assert [stage.stage for stage in status.readiness.stages] == ["running"]


def test_operations_on_an_unknown_vm_are_not_found(hv: Hypervisor) -> None:
    for operation in (machine.stop, machine.destroy, operations.status, snapshots.list_snapshots):
        with pytest.raises(NotFoundError):
            operation(hv, "vt-no-such-vm")


def test_destroy_powers_off_and_keeps_every_file(vm: DriverVm, hv: Hypervisor) -> None:
    files = sorted(path for path in vm.spec.diff_path.parent.rglob("*"))
    assert machine.destroy(hv, vm.name) is True
    assert hv.state(vm.name) == DomainState.SHUT_OFF
    assert machine.destroy(hv, vm.name) is False  # already off
    assert sorted(path for path in vm.spec.diff_path.parent.rglob("*")) == files


def test_snapshots_are_recorded_beside_the_diff_and_follow_their_state_rules(vm: DriverVm, hv: Hypervisor) -> None:
    memory = snapshots.create(hv, vm.name, name="with-memory", kind="memory")
    assert (memory.kind, memory.vm_state, memory.current) == ("memory", "running", True)
    with pytest.raises(ConflictError, match="already has a snapshot"):
        snapshots.create(hv, vm.name, name="with-memory")
    machine.destroy(hv, vm.name)
    with pytest.raises(ConflictError, match="needs a running VM"):
        snapshots.create(hv, vm.name, name="no-memory", kind="memory")
    disk = snapshots.create(hv, vm.name, name="disk-only")
    assert (disk.kind, disk.parent, disk.current) == ("disk", "with-memory", True)
    store = snapshots.SnapshotStore(vm.spec.diff_path)
    assert set(store.names()) == {"with-memory", "disk-only"}
    reverted = snapshots.revert(hv, vm.name, "with-memory")
    assert reverted.state == DomainState.RUNNING and reverted.snapshot.current  # memory: running again
    snapshots.delete(hv, vm.name, "disk-only")
    assert [found.name for found in snapshots.list_snapshots(hv, vm.name)] == ["with-memory"]
    assert set(store.names()) == {"with-memory"}
    with pytest.raises(NotFoundError):
        snapshots.get(hv, vm.name, "disk-only")


def test_each_operation_looks_the_domain_up_once(vm: DriverVm, hv: Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    """One handle per operation: the state rule, the stop (agent ping, shutdown, polls), each
    snapshot operation and the result all act on the domain looked up at the start; `up` looks
    it up before and after its definition (and `define` itself once, for the UUID), the
    readiness wait on the same handle."""
    lookups: list[str] = []
    looked_up = hv._virdomain
    monkeypatch.setattr(hv, "_virdomain", lambda name: lookups.append(name) or looked_up(name))

    def count(call: object, *args: object, **kwargs: object) -> int:
        lookups.clear()
        call(hv, vm.name, *args, **kwargs)  # type: ignore[operator]
        return len(lookups)

    assert count(operations.stop, 5) == 1
    assert count(operations.start) == 1
    assert count(operations.status) == 1  # guest facts asked too (no agent on the test driver)
    assert count(operations.destroy) == 1
    assert count(operations.create_snapshot, "once") == 1
    assert count(operations.list_snapshots) == 1
    assert count(operations.get_snapshot, "once") == 1
    assert count(operations.revert_snapshot, "once") == 2  # and `define` once, for the UUID
    assert count(operations.delete_snapshot, "once") == 1
    lookups.clear()
    assert machine.up(vm.spec, hv).readiness.ready and len(lookups) == 3
