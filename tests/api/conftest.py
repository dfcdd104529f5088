"""Fixtures for the REST API tests: a real `virtainer serve` (uvicorn) on a free port, serving
real guests under the real libvirtd."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import forget_domain, unique_name
from tests.guests import TINY_CMDLINE, TinyGuest, tiny_guest
from tests.waiting import wait_until
from virtainer import machine
from virtainer.hypervisor import Hypervisor
from virtainer.spec import VmSpec, resolve_spec, settings_from_mapping

VIRTAINER = [sys.executable, "-m", "virtainer.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ApiServer:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = "", timeout: float = 120.0) -> httpx.Client:
        """token "" (default): the right one; None: none; anything else: that one."""
        token = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serving(
    directory: Path,
    *vms: str,
    token: str | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[ApiServer]:
    """`virtainer serve` in a subprocess; token None: let it generate one (read from its file).
    env: VIRTAINER_API_* settings for it; args: more flags (--docker)."""
    port = port or free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIRTAINER_API")} | (env or {})
    if token:
        env["VIRTAINER_API_TOKEN"] = token
    token_file = directory / "api-token"
    command = [*VIRTAINER, "serve", "--port", str(port), "--token-file", str(token_file)]
    command += [arg for vm in vms for arg in ("--vm", vm)] + list(args)
    log = directory / f"api-{port}.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
    server = ApiServer(f"http://127.0.0.1:{port}", token or "", process, log)
    try:
        wait_until(lambda: _healthy(server), 30, f"the API on port {port}", interval_s=0.1)
        server.token = token or token_file.read_text().strip()
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    """SIGTERM, then SIGKILL when it does not exit in time."""
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _healthy(server: ApiServer) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"virtainer serve exited {server.process.returncode}:\n{server.output()}")
    try:
        return httpx.get(server.url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class TinyVm:
    name: str
    spec: VmSpec
    guest: TinyGuest

    @property
    def serial_log(self) -> str:
        path = self.spec.serial_log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def booted(self) -> bool:
        """The last boot on the console got as far as GUEST-READY (acpid runs: ACPI stops work)."""
        log = self.serial_log
        return log.rfind("GUEST-READY") > log.rfind("HELLO-FROM-GUEST") >= 0

    def boots(self) -> int:
        """The guest's boot counter (kept on its disk), as last printed on the console."""
        counts = [line.split("=", 1)[1].strip() for line in self.serial_log.splitlines() if "GUEST-DISK-BOOTS=" in line]
        return int(counts[-1]) if counts else 0


def tiny_spec(name: str, directory: Path, guest: TinyGuest, *, cmdline: str = TINY_CMDLINE, **extra: str) -> VmSpec:
    settings = {
        "name": name, "image": str(guest.base_image), "kernel": str(guest.kernel), "initrd": str(guest.initrd),
        "cmdline": cmdline, "state_dir": str(directory / "state"), "diff": str(directory / "diff.qcow2"),
        "memory": "256M", "vcpus": 1, "network": "none", "wait_for": "running", "boot_timeout": 60, **extra,
    }  # fmt: skip
    return resolve_spec(settings_from_mapping(settings, "test"))


@contextlib.contextmanager
def booted_tiny(directory: Path, *, prefix: str = "api", cmdline: str = TINY_CMDLINE, **extra: str) -> Iterator[TinyVm]:
    """extra: more VM settings (e.g. vnc="auto", video="vga")."""
    guest = tiny_guest()
    name = unique_name(prefix)
    spec = tiny_spec(name, directory, guest, cmdline=cmdline, **extra)
    try:
        with Hypervisor() as hv:
            machine.up(spec, hv)
        vm = TinyVm(name, spec, guest)
        wait_until(vm.booted, 60, "the tiny guest's GUEST-READY")
        yield vm
    finally:
        forget_domain(name)
        with contextlib.suppress(subprocess.SubprocessError):  # its snapshots' metadata, too
            subprocess.run(["virsh", "-q", "undefine", name, "--snapshots-metadata"], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def tiny_vm(module_vm_dir: Path) -> Iterator[TinyVm]:
    with booted_tiny(module_vm_dir) as vm:
        yield vm


@pytest.fixture(scope="module")
def api(module_vm_dir: Path, tiny_vm: TinyVm) -> Iterator[ApiServer]:
    with serving(module_vm_dir, tiny_vm.name, token="api-test-" + secrets.token_hex(12)) as server:
        yield server
