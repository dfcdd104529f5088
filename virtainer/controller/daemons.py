"""libvirtd as a supervised child of the controller.

libvirtd runs in the foreground in a session of its own (a Ctrl+C or a signal meant for the
controller never reaches it), logging to a file. The controller polls it: when it dies while the
VM runs, it is started again; QEMU keeps running meanwhile and libvirtd reconnects to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from virtainer.errors import HypervisorError
from virtainer.hypervisor import Hypervisor

STALE_FILES = ("/run/libvirtd.pid", "/run/libvirt/libvirt-sock", "/run/libvirt/libvirt-sock-ro",
               "/run/libvirt/libvirt-admin-sock")  # fmt: skip


class Daemon:
    def __init__(self, name: str, argv: Sequence[str], log_path: Path, stale_files: Sequence[str] = ()) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stale_files = [Path(path) for path in stale_files]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        for path in self.stale_files:  # left by a killed predecessor; they would block a start
            path.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_status(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_s: float = 5.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


LIBVIRT_RUNTIME_DIR = Path("/run/libvirt")


def clear_runtime_state(directory: Path = LIBVIRT_RUNTIME_DIR, leases: Path = Path("/var/lib/libvirt/dnsmasq")) -> None:
    """Forget libvirt's runtime state from a previous life of this container (`docker restart`).

    /run survives a restart in Docker; the processes, bridge and tap devices it describes do not.
    Stale network status there makes libvirtd refuse the network's definition ("already exists
    with uuid ..."), and old DHCP leases would report the guest's address before it has one.
    Only for the first start: a libvirtd restarted while the VM runs needs both.
    """
    for path in (directory, leases):
        if path.is_dir():
            shutil.rmtree(path)


def libvirtd(log_path: Path) -> Daemon:
    return Daemon("libvirtd", ["libvirtd"], log_path, STALE_FILES)


def connect_when_ready(daemon: Daemon, uri: str, timeout_s: float, interval_s: float = 0.05) -> Hypervisor:
    """Connect as soon as the daemon accepts connections; fail early if it exits."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        try:
            return Hypervisor(uri)
        except HypervisorError:
            if not daemon.alive():
                raise HypervisorError(
                    f"{daemon.name} exited with status {daemon.exit_status()} while starting: {daemon.log_tail()}"
                ) from None
            if time.monotonic() >= deadline:
                raise HypervisorError(f"{daemon.name} did not accept connections within {timeout_s:.0f} s") from None
        pause.wait(interval_s)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
