"""What the virtainer container needs from whatever runs it: one home for these facts.

`docker run` (tests/container), compose files, Swarm stacks and the Kubernetes manifests all take
their capabilities, devices, mounts, ports and environment names from here, and the tests check
each orchestrator's files against this module, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from virtainer.api.defaults import DEFAULT_PORT
from virtainer.spec import SETTINGS
from virtainer.units import parse_size_mib

# A VM with a NIC (the NAT network on the container's address): NET_ADMIN for the bridge, tap
# and iptables; SYS_ADMIN only to remount /proc/sys read-write (libvirt writes ip_forward).
# The runtime's defaults must also grant NET_RAW (dnsmasq's DHCP) and MKNOD (/dev/net/tun):
# Docker's and containerd's do, Podman's and CRI-O's do not (add them there).
NETWORK_CAPABILITIES: tuple[str, ...] = ("NET_ADMIN", "SYS_ADMIN")
RUNTIME_DEFAULT_CAPABILITIES: tuple[str, ...] = ("NET_RAW", "MKNOD")

KVM_DEVICE = PurePosixPath("/dev/kvm")  # optional: without it the guest runs under TCG
KVM_DEVICE_PLUGIN_RESOURCE = "devices.kubevirt.io/kvm"  # KubeVirt's (and the generic) device plugin
DIFF_MOUNT = PurePosixPath("/mounted")  # the VM's persistent diff: local_image.qcow2 (IMAGE_DIR)
API_PORT = DEFAULT_PORT  # REST API, /healthz and /readyz; never forwarded to the guest
READY_PATH = "/readyz"  # the VM reached every readiness stage it waits for
ALIVE_PATH = "/healthz"  # the controller and libvirt answer
GUEST_SSH_PORT = 22

# Environment the container reads besides the VM settings of virtainer.spec (controller, API)
CONTAINER_ENV: tuple[str, ...] = (
    "VIRTAINER_API",
    "VIRTAINER_API_PORT",
    "VIRTAINER_API_LISTEN",
    "VIRTAINER_API_TOKEN",
    "VIRTAINER_API_TOKEN_FILE",
    "VIRTAINER_API_PEERS",
    "VIRTAINER_RESERVED_PORTS",
    "VIRTAINER_CONTROLLER_PORTS",
    "VIRTAINER_CONSOLE_LOG",
    "LIBVIRT_DEFAULT_URI",
)
API_TOKEN_ENV = "VIRTAINER_API_TOKEN"
MANAGER_ENV = "VIRTAINER_MANAGER"  # 1: the image runs the manager (no VM; the engine's socket mounted)

# Memory beyond the guest's RAM: libvirtd, the controller and its API (~80 MiB idle, see
# benchmarks/container_bench.py), QEMU itself and, under TCG, its translated-code cache.
BASE_OVERHEAD_MIB = 320
OVERHEAD_MIB_PER_VCPU = 16
DEFAULT_STOP_TIMEOUT_S = 60  # VIRTAINER_STOP_TIMEOUT's default (virtainer.spec)
STOP_MARGIN_S = 30  # libvirtd and the controller exit after the guest powered off


def accepted_env_names() -> frozenset[str]:
    """Every environment variable the container understands."""
    return frozenset(name for setting in SETTINGS for name in setting.env_names) | set(CONTAINER_ENV)


@dataclass(frozen=True)
class VmSize:
    memory_mib: int
    vcpus: int

    @property
    def overhead_mib(self) -> int:
        return BASE_OVERHEAD_MIB + OVERHEAD_MIB_PER_VCPU * self.vcpus + self.memory_mib // 64

    @property
    def container_memory_mib(self) -> int:
        """What the container needs at least: the guest's RAM plus the overhead."""
        return self.memory_mib + self.overhead_mib


def vm_size(memory: str, vcpus: str) -> VmSize:
    """From RAM and CPU as the container reads them (ValueError on nonsense)."""
    return VmSize(parse_size_mib(memory, default_unit="M"), int(vcpus))


def grace_period_s(stop_timeout_s: float) -> int:
    """An orchestrator's stop grace period that covers the guest's shutdown."""
    return int(stop_timeout_s) + STOP_MARGIN_S
