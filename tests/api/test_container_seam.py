"""The seam the container controller starts the API through (virtainer.api.container): a real
uvicorn on a thread of this process, next to a supervisor that must tell the power-offs it was
asked for from the guest powering itself off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import TinyVm, booted_tiny, free_port
from tests.waiting import wait_until
from virtainer.api import container

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def seam_vm(module_vm_dir: Path) -> Iterator[TinyVm]:
    with booted_tiny(module_vm_dir, prefix="seam") as vm:
        yield vm


def test_start_serve_and_tell_requested_power_offs(seam_vm: TinyVm, tmp_path: Path) -> None:
    port = free_port()
    environ = {"VIRTAINER_API_PORT": str(port), "VIRTAINER_API_LISTEN": "127.0.0.1"}
    environ["VIRTAINER_API_TOKEN_FILE"] = str(tmp_path / "token")
    lines: list[str] = []
    assert container.reserved_ports(environ) == (port,)
    ready: list[str] = []
    handle = container.start(environ, seam_vm.name, lines.append, on_ready=lambda vm, _r: ready.append(vm))
    assert handle is not None
    try:
        token = (tmp_path / "token").read_text().strip()
        assert sum(token in line for line in lines) == 1  # printed once, into the container log
        assert any(f"REST API on 127.0.0.1:{port}" in line for line in lines)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=handle.url, headers=headers, timeout=120) as http:
            assert http.get("/v1/vms").json()[0]["name"] == seam_vm.name
            assert http.get("/v1/vms/other").status_code == 404  # only the container's VM
            assert not container.off_on_request(handle, seam_vm.name)
            wait_until(seam_vm.booted, 60, "acpid")
            assert http.post(f"/v1/vms/{seam_vm.name}/stop").json()["graceful"] is True
            assert container.off_on_request(handle, seam_vm.name)  # asked for: not a guest power-off
            assert http.post(f"/v1/vms/{seam_vm.name}/start").status_code == 200
            assert not container.off_on_request(handle, seam_vm.name)
            wait_until(lambda: ready == [seam_vm.name], 30, "on_ready after the start")
            assert http.get("/readyz").status_code == 200
    finally:
        container.stop(handle)
    assert not handle.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_disabled_api_reserves_no_port_and_starts_nothing(seam_vm: TinyVm) -> None:
    environ = {"VIRTAINER_API": "off"}
    assert container.reserved_ports(environ) == ()
    assert container.start(environ, seam_vm.name, print) is None


LAZY_PROBE = """
import sys, httpx
from virtainer.api import container
environ = dict(VIRTAINER_API_PORT="0", VIRTAINER_API_LISTEN="127.0.0.1", VIRTAINER_API_TOKEN_FILE=sys.argv[1])
api = container.start(environ, "vm", lambda line: None)
print("before", "fastapi" in sys.modules, "uvicorn" in sys.modules, "pydantic" in sys.modules)
print("status", httpx.get(api.url + "/healthz", timeout=60).status_code)
print("after", "fastapi" in sys.modules, "uvicorn" in sys.modules)
container.stop(api)
"""


def test_api_loads_on_first_connection(tmp_path: Path) -> None:
    """Idle containers keep FastAPI, uvicorn and pydantic (the settings were checked by a child
    process) out of memory; the first client is still served."""
    done = subprocess.run(
        [sys.executable, "-c", LAZY_PROBE, str(tmp_path / "token")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["before False False False", "status 200", "after True True"]
    assert (tmp_path / "token").stat().st_mode & 0o077 == 0  # settled at start, before any request
