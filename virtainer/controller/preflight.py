"""What the container was started with, checked before anything starts.

Each missing capability or device becomes one line naming the flag to add. With `--privileged`
every check passes as is; with minimal flags (`--cap-add NET_ADMIN --cap-add SYS_ADMIN`) the
controller fixes what it may (creates /dev/net/tun, remounts /proc/sys read-write). Without
NET_ADMIN the controller does not call these checks: the VM gets QEMU's user-mode networking
instead (decided by resolve_spec from the container's facts), unless a setting needs the NAT
network (check_user_mode).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtainer.errors import ErrorKind, VirtainerError
from virtainer.spec import VmSpec

CAP_MKNOD = 27
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
TUN_DEVICE = Path("/dev/net/tun")
TUN_MAJOR, TUN_MINOR = 10, 200
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

NO_NIC_HINT = "or run the VM without a NIC: -e VIRTAINER_NETWORK=none"


class ContainerSetupError(VirtainerError):
    """The container lacks a capability or device the VM needs; the message names the flag."""

    kind = ErrorKind.INVALID


@dataclass(frozen=True)
class Capabilities:
    effective: int

    @classmethod
    def current(cls, status: Path = Path("/proc/self/status")) -> Capabilities:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return cls(int(line.split()[1], 16))
        return cls(0)

    def has(self, capability: int) -> bool:
        return bool(self.effective >> capability & 1)


def ensure_tun_device(caps: Capabilities, device: Path = TUN_DEVICE) -> str | None:
    """libvirt opens /dev/net/tun for the guest's NIC. Docker's default device rules allow the
    character device 10:200, so creating the node is enough (no --device needed).
    Returns what was done to make it so, None when the device was there."""
    if device.exists():
        if not stat.S_ISCHR(device.stat().st_mode):
            raise ContainerSetupError(f"{device} is not a character device", hint="--device /dev/net/tun")
        return None
    problem = "CAP_MKNOD is missing"
    if caps.has(CAP_MKNOD):
        try:
            device.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(TUN_MAJOR, TUN_MINOR))
            return f"created {device}"
        except OSError as error:
            problem = error.strerror or str(error)
    raise ContainerSetupError(
        f"the VM's network needs {device} and it cannot be created ({problem}): "
        f"add --device /dev/net/tun, {NO_NIC_HINT}"
    )


def proc_sys_writable(path: Path = IP_FORWARD) -> bool:
    return os.access(path, os.W_OK)


def ensure_proc_sys_writable(caps: Capabilities) -> str | None:
    """libvirt's network driver writes ip_forward even when it is already 1; Docker mounts
    /proc/sys read-only unless --privileged or systempaths=unconfined. With CAP_SYS_ADMIN the
    mount can be made writable again (it is this container's own network namespace).
    Returns what was done to make it so, None when it was writable."""
    if proc_sys_writable():
        return None
    if caps.has(CAP_SYS_ADMIN):
        done = subprocess.run(
            ["mount", "-o", "remount,rw,bind", "/proc/sys"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0 and proc_sys_writable():
            return "remounted /proc/sys read-write"
    raise ContainerSetupError(
        "the VM's network needs a writable /proc/sys (Docker mounts it read-only): add "
        f"--cap-add SYS_ADMIN (or --security-opt systempaths=unconfined, or --privileged), {NO_NIC_HINT}"
    )


def check_network_capabilities(caps: Capabilities) -> tuple[str, ...]:
    """NAT network for the guest: bridge, tap, iptables and forwarding. Returns what had to be
    fixed for it (nothing under --privileged; the node and the remount with minimal capabilities,
    as `docker run --cap-add` and Swarm's `cap_add` give them)."""
    if not caps.has(CAP_NET_ADMIN):
        raise ContainerSetupError(
            "the VM's network needs the NET_ADMIN capability: add --cap-add NET_ADMIN "
            f"(--privileged includes it), {NO_NIC_HINT}"
        )
    if not caps.has(CAP_NET_RAW):
        raise ContainerSetupError(
            "the VM's network needs the NET_RAW capability (DHCP for the guest): add --cap-add NET_RAW "
            f"(Docker grants it by default, Podman does not), {NO_NIC_HINT}"
        )
    fixes = (ensure_tun_device(caps), ensure_proc_sys_writable(caps))
    return tuple(fix for fix in fixes if fix is not None)


def check_user_mode(spec: VmSpec, origin: Callable[[str], str], *, guest_control_access: bool) -> None:
    """QEMU's user-mode networking in place of the NAT network (no NET_ADMIN): what it cannot do
    is refused, naming the setting as the user wrote it (`origin`) and the flag to add."""
    net = spec.network
    # QEMU's user-mode networking carries no guest forwards, and its restrict=on drops the
    # guest's replies to every inbound client but the container's own loopback (measured)
    for key, why, given in (
        ("guest_forwards", "user-mode networking cannot carry guest forwards", bool(net.forwards)),
        ("guest_restrict", "user-mode isolation would cut inbound connections from other hosts", net.restrict),
    ):
        if given:
            raise ContainerSetupError(
                f"{origin(key)} needs the NET_ADMIN capability ({why}): add --cap-add NET_ADMIN "
                "(--privileged includes it)"
            )
    if spec.vnc is not None and not guest_control_access:
        # QEMU makes the guest's connections from inside the container, where its VNC server
        # listens: without NET_ADMIN there are no rules that could keep the guest off it
        raise ContainerSetupError(
            f"{origin('vnc')} with user-mode networking would let the guest reach its own VNC server: add "
            "--cap-add NET_ADMIN (--privileged includes it), or set VIRTAINER_GUEST_CONTROL_ACCESS=1 to accept that"
        )
