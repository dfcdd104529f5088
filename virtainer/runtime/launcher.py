"""The container's process: boots the image's root filesystem in a VM, then hands over to the supervisor.

Runs inside the container (root = the runtime tree, `tini -s` as PID 1), from the plan the runtime
wrote at create. libvirt runs embedded in this process (`qemu:///embed`, no daemon) and starts
virtiofsd and QEMU, paused; then this process execs virtainer.runtime.supervisor, which stands in
for the command while the VM runs it, without libvirt in memory (QEMU's monitor is its own then).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from virtainer.accel import AcceleratorChoice, choose_accelerator
from virtainer.errors import VirtainerError
from virtainer.hypervisor import Hypervisor
from virtainer.runtime import netsetup
from virtainer.runtime.disks import attach_disks
from virtainer.runtime.hostlink import DOCKER_DNS
from virtainer.runtime.plan import EMBED_ROOT, GUEST_DIR, INITRD, RUN_DIR, SHARED_CACHE, LaunchPlan
from virtainer.runtime.qemu_memory import release_unused_pages
from virtainer.runtime.stdio import terminal_maps_newlines
from virtainer.runtime.supervisor import (
    EXIT_LAUNCH_FAILED,
    HANDED_OVER_SIGNALS,
    load_plan,
    log,
    reporting_failures,
    vm_files,
    wants_stdin,
)
from virtainer.runtime.timeline import Timeline
from virtainer.runtime.vm import PortRelay, domain_name, guest_config, render_vm_xml, write_initrd

# the supervisor's interpreter: no site-packages (it needs only the standard library and virtainer)
SUPERVISOR_FLAGS = ("-S",)
# libvirt embedded: no daemon, state under STATE_DIR; QEMU as root without libvirt's own
# namespaces, cgroups or labels (the container already has them)
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = []
cgroup_controllers = []
stdio_handler = "file"
"""


class Launcher:
    def __init__(self, plan: LaunchPlan) -> None:
        self.plan = plan
        self.files = vm_files()
        self.name = domain_name(plan.container_id)
        self.timeline = Timeline(plan.debug)

    # -- setup ---------------------------------------------------------------------------------

    def _prepare(self) -> tuple[Hypervisor, str, bool]:
        """libvirt open, the domain's XML, and whether the supervisor carries DNS over TCP."""
        config_dir = Path(EMBED_ROOT) / "etc"  # the embedded driver reads ROOT/etc/qemu.conf
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "qemu.conf").write_text(QEMU_CONF)
        accelerator = _accelerator(self.plan.accelerator)
        self.timeline.mark("accelerator chosen")
        if self.plan.debug:
            log(f"accelerator {accelerator.kind}: {accelerator.reason}")
        disks = attach_disks(self.plan.disks, self.files.rootfs)  # first: a refusal changes nothing
        nics = netsetup.take_over_network() if self.plan.network else []
        with_stdin = wants_stdin(self.plan)
        dns_proxy = bool(nics) and netsetup.uses_docker_dns(self.files.rootfs / "etc" / "resolv.conf")
        onlcr = terminal_maps_newlines(0) if self.plan.process.terminal else True
        relays = _relays(self.plan, dns_proxy) if nics else ()
        hostlink = netsetup.add_host_link(nics[0]) if relays else None
        config = guest_config(
            self.plan, with_stdin=with_stdin, nics=nics, onlcr=onlcr, dns_proxy=dns_proxy,
            disks=self.plan.disks, hostlink=hostlink, relays=relays,
        )  # fmt: skip
        write_initrd(Path(GUEST_DIR) / INITRD, config, self.files.initrd)
        xml = render_vm_xml(self.plan, self.files, accelerator, nics, disks, vnc_listen=hostlink or "0.0.0.0")
        self.timeline.mark("network, initramfs and domain XML ready")
        hypervisor = Hypervisor(f"qemu:///embed?root={EMBED_ROOT}")
        self.timeline.mark("libvirt (embedded) open")
        return hypervisor, xml, bool(dns_proxy and hostlink)

    # -- running: until the VM exists, then the supervisor ------------------------------------

    def run(self) -> int:
        self.timeline.create(Path(RUN_DIR))
        self.timeline.mark("launcher process started", self.timeline.started)
        self.timeline.mark("launcher's imports done")
        hypervisor, xml, forward_dns_tcp = self._prepare()
        try:
            hypervisor.start_transient(xml, paused=True)
            self.timeline.mark("libvirt started virtiofsd and QEMU (paused)")
            # here, not in the supervisor: QEMU has copied the kernel to guest RAM and done its dynamic
            # linking, and ctypes stays out of the supervisor
            release_unused_pages(self.name, self.files.kernel)
            hand_over(forward_dns_tcp=forward_dns_tcp)
        except BaseException:
            with contextlib.suppress(VirtainerError):
                hypervisor.destroy(self.name)
            self.timeline.mark("domain destroyed")
            hypervisor.close()
            for libvirt_log in sorted(Path(EMBED_ROOT).glob("log/**/*.log")):
                self.timeline.libvirt_log(libvirt_log)
            raise
        return EXIT_LAUNCH_FAILED  # not reached: hand_over execs or raises


def hand_over(*, forward_dns_tcp: bool) -> None:
    """Exec the supervisor in this process: libvirt's driver, threads and heaps go, the VM stays
    (the embedded driver is not told: its connection to QEMU's monitor just closes). Signals that
    arrive meanwhile wait, blocked, for the supervisor's handlers."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDED_OVER_SIGNALS)
    sys.stdout.flush()
    sys.stderr.flush()
    handover = json.dumps({"forward_dns_tcp": forward_dns_tcp})
    os.execv(sys.executable, [sys.executable, *SUPERVISOR_FLAGS, "-m", "virtainer.runtime.supervisor", handover])


def _relays(plan: LaunchPlan, dns_proxy: bool) -> tuple[PortRelay, ...]:
    """The guest ports carried to the container: VNC (where -p sends it), Docker's DNS over TCP."""
    vnc = (PortRelay("0.0.0.0", plan.vnc_port),) if plan.vnc_port else ()
    return vnc + ((PortRelay(*DOCKER_DNS),) if dns_proxy else ())


def _accelerator(requested: str) -> AcceleratorChoice:
    """virtainer.accel's choice; `auto` probes QEMU once per host boot (cached in SHARED_CACHE)."""
    if requested != "auto":
        return choose_accelerator(requested)
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    cached = Path(SHARED_CACHE) / f"accelerator-{boot_id}.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        data = json.loads(cached.read_text())
        return AcceleratorChoice(data["kind"], data["reason"] + " (probed earlier this boot)")
    choice = choose_accelerator(requested)
    with contextlib.suppress(OSError):
        temporary = cached.with_suffix(f".{os.getpid()}")
        temporary.write_text(json.dumps({"kind": choice.kind, "reason": choice.reason}))
        temporary.replace(cached)
    return choice


def main() -> int:
    return reporting_failures(lambda: Launcher(load_plan()).run(), "cannot launch the VM")


if __name__ == "__main__":
    sys.exit(main())
