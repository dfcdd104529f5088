"""Fixtures shared by every test: real libvirtd, real test guests, VM directories QEMU can reach."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test VMs live where libvirt's QEMU user can reach them (pytest's tmp_path is 0700 under /tmp).
VM_ROOT = Path(os.environ.get("VIRTAINER_TEST_VM_ROOT", "/var/tmp/virtainer-tests"))
LIBVIRT_URI = "qemu:///system"


@contextlib.contextmanager
def _fresh_vm_dir(label: str) -> Iterator[Path]:
    """A fresh 0755 directory for VM files, removed afterwards."""
    path = VM_ROOT / f"{label[:40]}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    for part in (VM_ROOT, path):
        part.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vm_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    with _fresh_vm_dir(request.node.name) as path:
        yield path


@pytest.fixture(scope="module")
def module_vm_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    with _fresh_vm_dir(request.module.__name__.rsplit(".", 1)[-1]) as path:
        yield path


def unique_name(prefix: str) -> str:
    return f"vt-{prefix}-{uuid.uuid4().hex[:6]}"


def forget_domain(name: str) -> None:
    """Destroy and undefine a test domain, whatever state it is in (UEFI ones too: --nvram)."""
    for command in (["destroy", name], ["undefine", name, "--nvram"]):
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, *command], capture_output=True, timeout=60)


@pytest.fixture
def domain_name(request: pytest.FixtureRequest) -> Iterator[str]:
    name = unique_name(request.node.name[:12].strip("_").replace("_", "-"))
    yield name
    forget_domain(name)


@pytest.fixture(scope="session")
def nat_network() -> Iterator[str]:
    """A libvirt NAT network of the tests' own (transient, unique name, a /24 no kernel route uses).

    Never libvirt's `default`: whether that one is defined, active, or carries a previous run's
    leases is what the daemon accumulated, not a fact of this run."""
    name = unique_name("net")  # vt-net-XXXXXX: 13 characters, within libvirt's bridge name limit
    for subnet in _free_subnets():
        gateway = subnet.network_address + 1
        xml = (
            f"<network><name>{name}</name><forward mode='nat'/><bridge name='vtbr{name[-6:]}'/>"
            f"<ip address='{gateway}' netmask='{subnet.netmask}'><dhcp>"
            f"<range start='{subnet.network_address + 2}' end='{subnet.broadcast_address - 1}'/></dhcp></ip></network>"
        )
        done = subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "net-create", "/dev/stdin"], input=xml,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        if done.returncode == 0:
            break
        if "in use" not in done.stderr:  # another run took that subnet meanwhile: try the next one
            raise AssertionError(f"cannot create the tests' libvirt network: {done.stderr.strip()}")
    else:
        raise AssertionError("no free /24 in 10.231.0.0/16 for the tests' libvirt network")
    try:
        yield name
    finally:
        subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "net-destroy", name], capture_output=True, timeout=60)


def _free_subnets() -> Iterator[ipaddress.IPv4Network]:
    """/24s of 10.231.0.0/16 that overlap none of the kernel's IPv4 routes, in random order."""
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True,
                            timeout=30, check=True).stdout  # fmt: skip
    used = [ipaddress.IPv4Network(word, strict=False) for word in re.findall(r"\b\d+\.\d+\.\d+\.\d+/\d+\b", routes)]
    candidates = list(ipaddress.IPv4Network("10.231.0.0/16").subnets(new_prefix=24))
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(route) for route in used):
            yield subnet
