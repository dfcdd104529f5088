"""VMs on libvirt's in-process test driver (test:///default): the core's operations run for real
against it, with no daemon and no root. Its state lives in this process and is shared by every
connection to it (the API's too), so each VM gets a unique name and is forgotten afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt

from tests.conftest import unique_name
from tests.unit.test_storage import make_base
from virtainer import machine
from virtainer.hypervisor import Hypervisor
from virtainer.spec import HostFacts, RawValue, VmSpec, resolve_spec

TEST_DRIVER = "test:///default"


@dataclass(frozen=True)
class DriverVm:
    name: str
    spec: VmSpec
    base: Path
    result: machine.UpResult


def driver_spec(tmp_path: Path, name: str, base: Path) -> VmSpec:
    settings = {"name": name, "image": str(base), "diff": str(tmp_path / "vm" / "diff.qcow2"),
                "state_dir": str(tmp_path / "vm" / "state"), "wait_for": "running", "accelerator": "tcg"}  # fmt: skip
    return resolve_spec({key: RawValue(value, key) for key, value in settings.items()}, HostFacts(2, 4096))


@contextlib.contextmanager
def driver_vm(tmp_path: Path, hv: Hypervisor) -> Iterator[DriverVm]:
    """A VM brought up by machine.up on the test driver (diff, seed, records written for real)."""
    base = make_base(tmp_path / "base.qcow2")
    spec = driver_spec(tmp_path, unique_name("fast"), base)
    try:
        yield DriverVm(spec.name, spec, base, machine.up(spec, hv))
    finally:
        forget(spec.name)


def forget(name: str) -> None:
    """Destroy and undefine with plain flags (the test driver refuses Hypervisor.undefine's)."""
    connection = libvirt.open(TEST_DRIVER)
    try:
        domain = connection.lookupByName(name)
        if domain.isActive():
            domain.destroy()
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    except libvirt.libvirtError:
        pass  # already gone
    finally:
        connection.close()
