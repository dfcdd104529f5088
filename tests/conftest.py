"""Fixtures shared by every test: real libvirtd, real test guests, VM directories QEMU can reach."""

from __future__ import annotations

import contextlib
import os
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
