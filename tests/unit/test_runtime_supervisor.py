"""The supervisor's end of QEMU and virtiofsd, with real processes (no VM: tests/runtime boots them)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from virtainer.runtime import supervisor

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def started(code: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"  # its handlers are set
    return process


def test_a_process_asked_to_end_ends_at_once() -> None:
    process = started("import time; print('ready', flush=True); time.sleep(60)")
    begun = time.monotonic()
    supervisor._stop_process(process.pid, supervisor._terminate)
    assert process.wait(timeout=10) == -signal.SIGTERM
    assert time.monotonic() - begun < supervisor.END_DEADLINE_S


def test_a_process_that_ignores_the_request_is_killed_after_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "END_DEADLINE_S", 0.5)
    process = started(IGNORES_SIGTERM)
    supervisor._stop_process(process.pid, supervisor._terminate)
    assert process.wait(timeout=10) == -signal.SIGKILL


def test_a_process_already_gone_is_no_error() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=10)
    supervisor._stop_process(process.pid, supervisor._terminate)  # reaped: no such process


def test_the_vm_module_still_exports_what_moved_to_guest_io() -> None:
    from virtainer.runtime import guest_io, vm

    assert vm.guest_config is guest_io.guest_config and vm.VmFiles is guest_io.VmFiles
    assert vm.PORTS == guest_io.PORTS and vm.domain_name("0123456789abcdef") == "virtainer-0123456789ab"


# what the supervisor must not load: it stays in memory for the container's life (issue 10's budget)
HEAVY_MODULES = {"libvirt", "jinja2", "lxml", "_hashlib", "subprocess", "ctypes", "typing", "datetime"}


def test_the_supervisor_loads_no_heavy_module() -> None:
    tree = Path(supervisor.__file__).parents[2]
    code = "import sys, virtainer.runtime.supervisor; print(' '.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(tree)}
    )
    assert HEAVY_MODULES.isdisjoint(done.stdout.split())
