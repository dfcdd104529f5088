"""The VM lifecycle: from a VmSpec to a running, ready guest, and back.

`up` checks everything that can be wrong (image, base identity vs an existing diff, cloud-init
input, accelerator) before it writes anything, so a refused start leaves the disk as it was.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from virtainer import snapshots, storage
from virtainer.accel import AcceleratorChoice, choose_accelerator
from virtainer.cloudinit import Seed, SeedRequest, build_seed, validate_seed_iso, write_secret_file, write_seed_iso
from virtainer.domain import render_domain_xml
from virtainer.errors import ConflictError, HypervisorError, NotFoundError
from virtainer.faults import crash_point
from virtainer.files import remove_stale_temporaries, write_atomic
from virtainer.hypervisor import Domain, DomainState, Hypervisor
from virtainer.nic import save_mac, with_nic_mac
from virtainer.readiness import Readiness, StageRecord, wait_until_ready
from virtainer.spec import DataDisk, VmSpec


class Reporter(Protocol):
    """How the lifecycle tells a front end what it does (CLI progress, container log lines)."""

    def step(self, message: str) -> None: ...

    def stage(self, record: StageRecord) -> None: ...

    def progress(self, label: str, done: int, total: int | None) -> None: ...


class QuietReporter:
    def step(self, message: str) -> None:
        pass

    def stage(self, record: StageRecord) -> None:
        pass

    def progress(self, label: str, done: int, total: int | None) -> None:
        pass


@dataclass(frozen=True)
class Plan:
    """Everything `up` will do, decided before anything is written."""

    spec: VmSpec
    base: Path | None  # None: the diff is a standalone system disk, used as it is
    identity: storage.BaseIdentity | None
    diff_exists: bool
    seed: Seed | None  # None when a prebuilt seed ISO is used as is
    seed_path: Path | None
    accelerator: AcceleratorChoice
    disk_formats: dict[Path, str]

    def domain_xml(self) -> str:
        """Rendered and validated once: plan_up renders it before anything is written, and up
        defines that same text (a second render cost ~15 ms of every start)."""
        return self._rendered

    @functools.cached_property
    def _rendered(self) -> str:
        diff_base = (self.base, self.identity.format) if self.base and self.identity else None
        return render_domain_xml(
            self.spec, self.accelerator, seed_path=self.seed_path, disk_formats=self.disk_formats,
            diff_base=diff_base,
        )  # fmt: skip


@dataclass
class UpResult:
    name: str
    accelerator: AcceleratorChoice
    reused_diff: bool
    readiness: Readiness
    user: str | None
    generated_password: str | None = None
    password_path: Path | None = None

    @property
    def address(self) -> str | None:
        return self.readiness.address

    def ssh_command(self) -> str | None:
        if not self.address:
            return None
        return f"ssh {self.user}@{self.address}" if self.user else f"ssh {self.address}"


@dataclass(frozen=True)
class StopResult:
    name: str
    method: Literal["agent", "acpi", "destroy", "none"]
    graceful: bool
    elapsed_s: float


# ---------------------------------------------------------------------------------------------
# up


def render(spec: VmSpec) -> str:
    """The domain XML `up` would define for this spec now (its recorded MAC and disk formats
    included), without libvirt and without writing anything."""
    return plan_up(spec, None, QuietReporter()).domain_xml()


def plan_up(spec: VmSpec, hv: Hypervisor | None, reporter: Reporter) -> Plan:
    """Fetch and identify the base, check the diff, build the seed in memory. Writes no VM file."""
    spec = with_nic_mac(spec)
    storage.check_writable(spec)
    formats = storage.data_disk_formats(spec)
    base: Path | None = None
    identity: storage.BaseIdentity | None = None
    if storage.has_base_image(spec) and not storage.is_standalone_disk(spec.diff_path):
        base = storage.fetch_base_image(spec.image, lambda d, t: reporter.progress("download", d, t))
        reporter.step(f"base image {base}")
        identity = storage.base_identity(base, lambda d, t: reporter.progress("sha256", d, t))
        diff_exists = storage.check_diff_matches_base(spec, identity)
    else:
        storage.require_system_disk(spec)
        formats[spec.diff_path] = storage.standalone_disk_format(spec)
        diff_exists = True
        reporter.step(f"system disk {spec.diff_path} ({formats[spec.diff_path]}, no backing file: used as it is)")
    storage.check_disk_size(spec, identity)
    seed, seed_path = _plan_seed(spec, disk_cloud_config(spec, base, identity, diff_exists))
    offers_kvm = hv.offers_kvm() if hv is not None and spec.accelerator != "tcg" else None
    accelerator = choose_accelerator(spec.accelerator, libvirt_offers_kvm=offers_kvm)
    plan = Plan(spec, base, identity, diff_exists, seed, seed_path, accelerator, formats)
    plan.domain_xml()  # render and validate now: a template problem must stop us before writes
    return plan


def _plan_seed(spec: VmSpec, vendor_cloud_config: dict[str, Any] | None) -> tuple[Seed | None, Path | None]:
    if spec.seed_iso:
        validate_seed_iso(spec.seed_iso)
        return None, spec.seed_iso
    return build_seed(seed_request(spec, vendor_cloud_config)), spec.generated_seed_path


def disk_cloud_config(
    spec: VmSpec, base: Path | None, identity: storage.BaseIdentity | None, diff_exists: bool
) -> dict[str, Any] | None:
    """cloud-init settings the system disk calls for: growpart off when no partition of the base
    has room to grow on the disk (cloud-init's own growpart run costs ~2 s of every boot under
    TCG just to find that out). None when in doubt: cloud-init then grows as it always does."""
    if base is None or identity is None:
        return None
    current = storage.qcow2_virtual_size(spec.diff_path) if diff_exists else identity.virtual_size
    if current is None:
        return None
    table = storage.base_partition_table(base, identity)
    if table is None or table.may_grow_on(max(current, (spec.disk_size_mib or 0) * 2**20)):
        return None
    return {"growpart": {"mode": "off"}}


def seed_request(spec: VmSpec, vendor_cloud_config: dict[str, Any] | None = None) -> SeedRequest:
    stored_password = _read_stored_password(spec)
    policy = spec.password_policy
    if stored_password and policy in ("auto", "random") and not spec.password:
        # reuse the password generated on the first start: same seed, same instance-id
        return _seed_request(spec, vendor_cloud_config, password=stored_password, policy="fixed")
    return _seed_request(spec, vendor_cloud_config, password=spec.password, policy=policy)


def _seed_request(
    spec: VmSpec, vendor_cloud_config: dict[str, Any] | None, *, password: str | None, policy: str
) -> SeedRequest:
    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path else None

    return SeedRequest(
        hostname=spec.hostname,
        default_user=spec.default_user,
        ssh_authorized_keys=spec.ssh_authorized_keys,
        user_data=read(spec.user_data),
        meta_data=read(spec.meta_data),
        network_config=read(spec.network_config),
        password=password,
        password_policy=policy,  # type: ignore[arg-type]
        extra_cloud_config=data_disk_cloud_config(spec.data_disks, spec.disk_bus),
        vendor_cloud_config=vendor_cloud_config,
    )


def _read_stored_password(spec: VmSpec) -> str | None:
    try:
        return spec.password_path.read_text().strip() or None
    except FileNotFoundError:
        return None


# How udev names a disk whose serial is `data<N>`, by bus (/dev/disk/by-id/...)
_BY_ID = {"virtio": "virtio-{}", "scsi": "scsi-0QEMU_QEMU_HARDDISK_{}", "sata": "ata-QEMU_HARDDISK_{}",
          "ide": "ata-QEMU_HARDDISK_{}"}  # fmt: skip


def data_disk_cloud_config(disks: tuple[DataDisk, ...], bus: str = "virtio") -> dict[str, object] | None:
    """Format (once: overwrite false) and mount the data disks that name a filesystem and a mount."""
    formatted = [(index, disk) for index, disk in enumerate(disks) if disk.filesystem and disk.mount]
    if not formatted:
        return None

    def device(index: int) -> str:
        return "/dev/disk/by-id/" + _BY_ID[bus].format(f"data{index}")

    return {
        "fs_setup": [
            {"device": device(index), "filesystem": disk.filesystem, "label": f"data{index}", "overwrite": False}
            for index, disk in formatted
        ],
        "mounts": [
            [device(index), disk.mount, disk.filesystem, "defaults,nofail", "0", "2"] for index, disk in formatted
        ],
    }


def up(spec: VmSpec, hv: Hypervisor, reporter: Reporter | None = None, *, wait: bool = True) -> UpResult:
    """Create (or reuse) the diff, write the seed, define and start the domain, wait until ready."""
    reporter = reporter or QuietReporter()
    existing = hv.find_domain(spec.name)
    _refuse_foreign_domain(existing, spec)
    if existing is not None and existing.state().active:
        return _already_running(spec, existing, reporter, wait)
    plan = plan_up(spec, hv, reporter)
    reporter.step(f"accelerator {plan.accelerator.kind} ({plan.accelerator.reason})")
    if spec.network.mode == "network":
        hv.ensure_network_active(spec.network.source)
    generated = _write_vm_files(plan, reporter)
    xml = plan.domain_xml()
    has_secret = spec.vnc is not None and bool(spec.vnc.password)  # the XML holds the VNC password
    write_atomic(spec.domain_xml_path, xml, mode=0o600 if has_secret else 0o644)
    _forget_other_diffs_snapshots(existing, spec, reporter)
    hv.define(xml)
    crash_point("defined")
    dom = hv.domain(spec.name)  # looked up once it is (re)defined: everything from here acts on it
    _restore_snapshots(dom, spec, reporter)
    readiness = Readiness(started_at=time.time(), wanted=spec.wait_for, ready_command=spec.ready_command)
    spec.serial_log_path.unlink(missing_ok=True)  # this boot's console only
    dom.start()
    reporter.step(f"domain '{spec.name}' started")
    result = UpResult(
        name=spec.name,
        accelerator=plan.accelerator,
        reused_diff=plan.diff_exists,
        readiness=readiness,
        user=spec.default_user,
        generated_password=generated,
        password_path=spec.password_path if generated else None,
    )
    if wait:
        wait_ready(spec, dom, readiness, reporter)
    return result


def _forget_other_diffs_snapshots(existing: Domain | None, spec: VmSpec, reporter: Reporter) -> None:
    """A domain redefined on another diff must not list the snapshots inside the previous one."""
    if existing is None or existing.metadata().get("diff") == str(spec.diff_path):
        return
    if forgotten := snapshots.forget_all(existing):
        reporter.step(f"snapshots of the previous diff no longer listed: {', '.join(forgotten)}")


def _restore_snapshots(dom: Domain, spec: VmSpec, reporter: Reporter) -> None:
    """Snapshots live inside the diff; libvirt learns of them again from the record beside it."""
    report = snapshots.restore_saved(dom, spec.diff_path)
    if report.restored:
        reporter.step(f"snapshots restored from the volume: {', '.join(report.restored)}")
    for name, why in report.skipped.items():
        reporter.step(f"snapshot '{name}' not restored: {why}")


def wait_ready(
    spec: VmSpec, dom: Domain, readiness: Readiness, reporter: Reporter, stop: threading.Event | None = None
) -> Readiness:
    record_path = spec.readiness_path

    def on_stage(record: StageRecord) -> None:
        write_atomic(record_path, readiness.to_json())
        reporter.stage(record)

    write_atomic(record_path, readiness.to_json())
    forwarded_ssh = spec.network.incoming_port(22) if spec.network.mode == "user" else None
    return wait_until_ready(
        dom, readiness, timeout_s=spec.boot_timeout_s, on_stage=on_stage, stop=stop,
        ssh_endpoint=("127.0.0.1", forwarded_ssh) if forwarded_ssh else None,
    )  # fmt: skip


def _write_vm_files(plan: Plan, reporter: Reporter) -> str | None:
    """The only place `up` writes: state dir, diff, data disks, seed, generated password."""
    spec = plan.spec
    _make_state_dir(spec.state_dir)
    # what a killed start left half-written (the diff lock is held: no one else writes these)
    owned = (spec.diff_path, spec.base_record_path, spec.format_record_path, spec.nic_record_path,
             spec.nvram_path, spec.password_path, spec.generated_seed_path, spec.domain_xml_path)  # fmt: skip
    if stale := remove_stale_temporaries(owned):
        reporter.step(f"removed what an interrupted start left: {', '.join(path.name for path in stale)}")
    if plan.base is None or plan.identity is None:
        storage.prepare_standalone_disk(spec, plan.disk_formats[spec.diff_path])
    else:
        reused = storage.prepare_diff(spec, plan.base, plan.identity)
        reporter.step(f"{'reusing' if reused else 'created'} diff {spec.diff_path}")
    if spec.uefi is not None:
        created = storage.prepare_nvram(spec)
        how = f"created from {spec.uefi.vars_template}" if created else "reusing"
        reporter.step(f"UEFI NVRAM {spec.nvram_path} ({how})")
        crash_point("nvram")
    for disk in spec.data_disks:
        if disk.size_mib and storage.create_data_disk(disk.path, disk.size_mib):
            reporter.step(f"created data disk {disk.path}")
            crash_point("data-disk")
    if storage.record_disk_formats(spec, plan.disk_formats):
        reporter.step(f"disk formats recorded in {spec.format_record_path}")
    if spec.mac_address and spec.network.mode != "none" and save_mac(spec, spec.mac_address):
        reporter.step(f"NIC MAC {spec.mac_address} recorded in {spec.nic_record_path}")
    generated = None
    if plan.seed is not None and plan.seed_path is not None:
        write_seed_iso(plan.seed, plan.seed_path)
        generated = plan.seed.generated_password
        if generated:
            write_secret_file(spec.password_path, generated + "\n")
        reporter.step(f"cloud-init seed {plan.seed_path} (instance-id {plan.seed.instance_id})")
        crash_point("seed")
    return generated


def _make_state_dir(path: Path) -> None:
    """Create the state directory readable by QEMU (libvirt-qemu must reach the seed and logs).
    An existing directory is the user's: its mode is never changed (`--state-dir /tmp`)."""
    if path.is_dir():
        return
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return
    os.chmod(path, 0o755)


def _refuse_foreign_domain(existing: Domain | None, spec: VmSpec) -> None:
    if existing is None:
        return
    metadata = existing.metadata()
    if not metadata:
        raise ConflictError(f"a VM named '{spec.name}' exists and is not managed by virtainer")
    if existing.state().active and metadata.get("diff") != str(spec.diff_path):
        raise ConflictError(
            f"VM '{spec.name}' is running on diff {metadata.get('diff')}, not {spec.diff_path}",
            hint="stop it first, or choose another name",
        )


def _already_running(spec: VmSpec, dom: Domain, reporter: Reporter, wait: bool) -> UpResult:
    reporter.step(f"VM '{spec.name}' is already running")
    metadata = dom.metadata()
    readiness = Readiness.load(spec.readiness_path) or Readiness(
        time.time(), spec.wait_for, ready_command=spec.ready_command
    )
    if wait:
        wait_ready(spec, dom, readiness, reporter)
    accelerator = AcceleratorChoice(
        "kvm" if metadata.get("accelerator") == "kvm" else "tcg", metadata.get("accelerator-reason", "")
    )
    return UpResult(spec.name, accelerator, True, readiness, spec.default_user)


# ---------------------------------------------------------------------------------------------
# stop, destroy


def stop(hv: Hypervisor, name: str, timeout_s: float = 60.0) -> StopResult:
    """Graceful: ask the guest agent, then ACPI; destroy only when the timeout is reached."""
    return stop_domain(hv.domain(name), timeout_s)


def stop_domain(dom: Domain, timeout_s: float = 60.0) -> StopResult:
    """`stop` on a domain handle the caller looked up for its operation."""
    started = time.monotonic()
    deadline = started + timeout_s
    if not defined_state(dom).active:
        return StopResult(dom.name, "none", True, 0.0)
    attempts: list[tuple[Literal["agent", "acpi"], float]] = []
    if agent_answers(dom):
        attempts.append(("agent", min(timeout_s / 2, 30.0)))
    attempts.append(("acpi", timeout_s))
    for method, budget in attempts:
        if dom.request_shutdown(agent=method == "agent"):
            attempt_deadline = min(deadline, time.monotonic() + budget)
            if wait_for_shut_off(dom, attempt_deadline):
                return StopResult(dom.name, method, True, round(time.monotonic() - started, 2))
    dom.destroy()
    return StopResult(dom.name, "destroy", False, round(time.monotonic() - started, 2))


def defined_state(dom: Domain) -> DomainState:
    """The domain's state; NotFoundError when it was undefined since it was looked up."""
    state = dom.state()
    if state == DomainState.UNDEFINED:
        raise NotFoundError(f"no VM named '{dom.name}'")
    return state


def agent_answers(dom: Domain) -> bool:
    """Does the guest agent answer a ping (within 2 s)? Decides how stop and reboot ask the guest."""
    try:
        dom.agent_command({"execute": "guest-ping"}, timeout_s=2)
    except HypervisorError:
        return False
    return True


def wait_for_shut_off(dom: Domain, deadline: float, interval_s: float = 0.25) -> bool:
    """Poll the domain state until it is off or the monotonic deadline passes."""
    pause = threading.Event()
    while True:
        if not dom.state().active:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        pause.wait(min(interval_s, remaining))


def destroy(hv: Hypervisor, name: str) -> bool:
    """Power off at once; False when it was not running."""
    return hv.domain(name).destroy()


def undefine(hv: Hypervisor, name: str) -> None:
    """Forget the domain, keeping every disk, diff and record."""
    hv.undefine(name)
