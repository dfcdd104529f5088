"""What the launcher and the guest init share: the virtio-serial ports, the VM's files in the
container, and the init's configuration. Pure and light on imports: the supervisor (the launcher
once the VM runs) needs them for docker exec, without vm's Jinja and lxml."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from virtainer.runtime.plan import Disk, LaunchPlan, Nic

# virtio-serial port names, shared with guest/init.c
PORT_STDIN = "virtainer.stdin"
PORT_STDOUT = "virtainer.stdout"
PORT_STDERR = "virtainer.stderr"
PORT_CONTROL = "virtainer.control"
PORTS = (PORT_STDIN, PORT_STDOUT, PORT_STDERR, PORT_CONTROL)


@dataclass(frozen=True)
class PortRelay:
    """A guest TCP port (ADDR:PORT) the guest init carries to the same port at the host link."""

    address: str
    port: int


@dataclass(frozen=True)
class VmFiles:
    kernel: Path
    initrd: Path  # the per-container one: base initramfs + config
    console_log: Path
    socket_dir: Path
    rootfs: Path

    def socket(self, port: str) -> Path:
        return self.socket_dir / f"{port.removeprefix('virtainer.')}.sock"


def domain_name(container_id: str) -> str:
    return f"virtainer-{container_id[:12]}"


def guest_config(
    plan: LaunchPlan,
    *,
    with_stdin: bool,
    nics: list[Nic],
    onlcr: bool = True,
    dns_proxy: bool = False,
    disks: tuple[Disk, ...] = (),
    hostlink: str | None = None,
    relays: tuple[PortRelay, ...] = (),
) -> bytes:
    """The guest init's configuration: NUL-separated key, value pairs (see guest/init.c).

    onlcr: the guest's pty maps \\n to \\r\\n, unless the terminal on our side does (runc clears
    ONLCR on a pty it relays itself); dns_proxy: the guest answers for Docker's 127.0.0.11; disks:
    mounted before the process starts; relays: guest ports carried to `hostlink`, the launcher."""
    process = plan.process
    pairs: list[tuple[str, str]] = [("arg", arg) for arg in process.args]
    pairs += [("env", entry) for entry in process.env]
    pairs += [("cwd", process.cwd), ("uid", str(process.uid)), ("gid", str(process.gid))]
    pairs += [("group", str(gid)) for gid in process.groups]
    pairs += [("hostname", plan.hostname), ("terminal", str(int(process.terminal)))]
    pairs += [("stdin", str(int(with_stdin))), ("debug", str(int(plan.debug)))]
    pairs += [("onlcr", str(int(onlcr))), ("dns-proxy", str(int(dns_proxy)))]
    pairs += [("dns-upstream", server) for server in plan.dns_upstreams if dns_proxy]
    if process.rows and process.cols:
        pairs += [("rows", str(process.rows)), ("cols", str(process.cols))]
    for nic in nics:  # eth0, eth1... in this order
        pairs += [("net-mac", nic.mac), ("net-addr", nic.address), ("net-prefix", str(nic.prefix))]
        pairs += [("net-gateway", nic.gateway or ""), ("net-mtu", str(nic.mtu or 0))]
        pairs += [("net-addr6", address) for address in nic.ipv6] + [("net-gateway6", nic.gateway6 or "")]
    for disk in disks:
        if disk.mount and disk.filesystem:
            pairs += [("disk-serial", disk.serial), ("disk-fs", disk.filesystem), ("disk-mount", disk.mount)]
    if hostlink:
        pairs += [("hostlink", hostlink)] + [("relay", f"{relay.address} {relay.port}") for relay in relays]
    for key, value in pairs:
        if "\0" in key or "\0" in value:
            raise ValueError(f"NUL byte in {key}: {shlex.quote(value)}")
    return b"".join(f"{key}\0{value}\0".encode() for key, value in pairs)
