"""Snapshots of a VM's diff: create (disk-only or disk+memory), list, revert, delete, restore.

Why internal snapshots: the VM's disk is a qcow2 overlay (the diff) on a read-only base. An
internal snapshot (`savevm`, `qemu-img snapshot`, `blockdev-snapshot-internal-sync`) keeps the
snapshot's clusters and memory state *inside the diff file*, so it travels with the volume, adds
no file that hangs off the diff, and never writes the base. External snapshots would do all three.

libvirt keeps snapshot metadata outside the disk (lost with the container), so every change is
mirrored to `<diff>.snapshots/` on the volume (`<snap>.xml` as libvirt described it, `<snap>.json`
with virtainer's extras, `.index.json` naming the current one: a dot file, as no snapshot name
starts with a dot). `restore_saved` redefines them into libvirt
(VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE) when a domain is defined on that diff.

How each case maps onto libvirt 9.0 (checked on real guests):
- stopped VM, disk: libvirt's internal snapshot (`qemu-img snapshot -c`).
- running VM, memory: libvirt's internal snapshot (`savevm`: disk + RAM + device state).
- running VM, disk: libvirt 9.0 refuses internal disk-only snapshots of an active domain, so
  QEMU makes it (`blockdev-snapshot-internal-sync`, filesystems frozen by the guest agent when it
  answers) and libvirt records it as a powered-off snapshot. That record is also what makes the
  revert right: libvirt stops the VM, applies the disk state, and starts it again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from lxml import etree  # type: ignore[import-untyped]

from virtainer import storage
from virtainer.diff_files import DiffFiles
from virtainer.domain_model import parse_domain
from virtainer.errors import ConfigError, ConflictError, HypervisorError, NotFoundError, VirtainerError
from virtainer.files import write_atomic
from virtainer.hypervisor import Domain, DomainState, Hypervisor
from virtainer.validators import NAME_RULE, is_name

SnapshotKind = Literal["disk", "memory"]


@dataclass(frozen=True)
class Snapshot:
    """One snapshot as the API and CLI show it."""

    name: str
    kind: SnapshotKind
    created_at: float  # Unix time
    description: str
    vm_state: str  # the VM's state when it was taken
    parent: str | None
    current: bool
    quiesced: bool  # filesystems were frozen by the guest agent around a disk snapshot
    hardware: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RevertResult:
    snapshot: Snapshot
    state: DomainState  # the VM's state afterwards
    elapsed_s: float


@dataclass(frozen=True)
class RestoreReport:
    restored: list[str]
    skipped: dict[str, str]  # snapshot name -> why


# ---------------------------------------------------------------------------------------------
# The record on the volume


class SnapshotStore:
    """`<diff>.snapshots/`: the snapshots' descriptions, beside the diff on the same volume."""

    def __init__(self, diff: Path) -> None:
        self.diff = diff
        self.root = DiffFiles(diff).snapshots

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(path.stem for path in self.root.glob("*.xml"))

    def xml(self, name: str) -> str:
        return (self.root / f"{name}.xml").read_text()

    def extras(self, name: str) -> dict[str, object]:
        try:
            data = json.loads((self.root / f"{name}.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, name: str, xml: str, extras: dict[str, object] | None = None) -> None:
        self.root.mkdir(mode=0o700, exist_ok=True)
        # XML last: a name is listed once its .xml exists, so its extras must be there first
        if extras is not None:
            _write(self.root / f"{name}.json", json.dumps(extras, indent=2) + "\n")
        _write(self.root / f"{name}.xml", xml)

    def remove(self, name: str) -> None:
        for suffix in (".xml", ".json"):
            (self.root / f"{name}{suffix}").unlink(missing_ok=True)

    def current(self) -> str | None:
        try:
            value = json.loads((self.root / ".index.json").read_text()).get("current")
        except (OSError, ValueError, AttributeError):
            return None
        return str(value) if value else None

    def set_current(self, name: str | None) -> None:
        self.root.mkdir(mode=0o700, exist_ok=True)
        _write(self.root / ".index.json", json.dumps({"current": name}) + "\n")


def _write(path: Path, text: str) -> None:
    """Atomic and private: the domain XML inside holds the definition's secrets."""
    write_atomic(path, text, mode=0o600)


# ---------------------------------------------------------------------------------------------
# Reading snapshots


def diff_of(dom: Domain) -> Path:
    """The diff a virtainer VM runs on (from its domain metadata)."""
    diff = dom.metadata().get("diff")
    if not diff:
        raise ConflictError(f"VM '{dom.name}' is not managed by virtainer (no diff recorded)")
    return Path(diff)


def list_snapshots(hv: Hypervisor, vm: str) -> list[Snapshot]:
    dom = hv.domain(vm)
    store = SnapshotStore(diff_of(dom))
    current = dom.snapshot_current()
    found = [_describe(dom.snapshot_xml(name), store.extras(name), current) for name in dom.snapshot_names()]
    return sorted(found, key=lambda snap: (snap.created_at, snap.name))


def get(hv: Hypervisor, vm: str, name: str) -> Snapshot:
    return _get(hv.domain(vm), name)


def _get(dom: Domain, name: str) -> Snapshot:
    store = SnapshotStore(diff_of(dom))
    try:
        xml = dom.snapshot_xml(name)
    except NotFoundError:
        raise NotFoundError(f"VM '{dom.name}' has no snapshot '{name}'") from None
    return _describe(xml, store.extras(name), dom.snapshot_current())


def _describe(xml: str, extras: dict[str, object], current: str | None) -> Snapshot:
    document = etree.fromstring(xml.encode())
    name = document.findtext("name") or ""
    memory = document.find("memory")
    has_memory = memory is not None and memory.get("snapshot") == "internal"
    hardware = extras.get("hardware")
    return Snapshot(
        name=name,
        kind="memory" if has_memory else "disk",
        created_at=float(document.findtext("creationTime") or 0),
        description=document.findtext("description") or "",
        vm_state=str(extras.get("vm_state") or document.findtext("state") or ""),
        parent=document.findtext("parent/name"),
        current=name == current,
        quiesced=bool(extras.get("quiesced", False)),
        hardware=hardware if isinstance(hardware, dict) else {},
    )


# ---------------------------------------------------------------------------------------------
# Creating


def default_name(now: float | None = None) -> str:
    return time.strftime("snap-%Y%m%d-%H%M%S", time.gmtime(now or time.time()))


def check_name(name: str) -> str:
    if not is_name(name):
        raise ConfigError("snapshot name", name, NAME_RULE)
    return name


def create(
    hv: Hypervisor, vm: str, *, name: str | None = None, kind: SnapshotKind = "disk", description: str = ""
) -> Snapshot:
    """Take a snapshot of a running or stopped VM and record it on the volume."""
    dom = hv.domain(vm)
    diff = diff_of(dom)
    name = check_name(name or default_name())
    _require_qcow2(diff)
    if name in dom.snapshot_names():
        raise ConflictError(f"VM '{vm}' already has a snapshot named '{name}'")
    if name in _names_inside(diff):  # e.g. a teammate's copied diff: a second tag would shadow it
        raise ConflictError(
            f"the diff {diff} already holds an internal snapshot named '{name}'",
            hint="choose another name (qemu-img snapshot -l lists the diff's snapshots)",
        )
    state = dom.state()
    active = state.active
    if kind == "memory" and not active:
        raise ConflictError(
            f"VM '{vm}' is {state.value}: a memory snapshot needs a running VM",
            hint="start it first, or take a disk snapshot (kind=disk)",
        )
    quiesced = False
    if kind == "disk" and active:
        quiesced = _create_disk_live(dom, name, diff, description)
    else:
        xml = _snapshot_xml(name, description, memory=kind == "memory", disks=_disk_targets(dom, diff))
        dom.snapshot_create(xml)
    extras: dict[str, object] = {"vm_state": state.value, "quiesced": quiesced, "hardware": hardware_of(dom)}
    SnapshotStore(diff).save(name, dom.snapshot_xml(name), extras)
    _save_current(dom, diff)
    return _get(dom, name)


def _require_qcow2(diff: Path) -> None:
    """Internal snapshots live in qcow2 clusters: a raw system disk cannot hold one."""
    disk_format = storage.image_info(diff).get("format")
    if disk_format != "qcow2":
        raise ConflictError(
            f"the VM's disk {diff} is {disk_format}: snapshots need a qcow2 disk",
            hint="convert it (qemu-img convert -O qcow2) while the VM is stopped",
        )


def _create_disk_live(dom: Domain, name: str, diff: Path, description: str) -> bool:
    """QEMU takes the disk state; libvirt then records it as a powered-off (disk) snapshot."""
    parent = dom.snapshot_current()
    created_at = int(time.time())
    thaw_failed: ThawError | None = None
    try:
        with frozen_filesystems(dom) as quiesced:
            dom.snapshot_disk_live(name, str(diff))
    except ThawError as error:
        if not error.snapshot_taken:
            raise
        thaw_failed, quiesced = error, True  # record the snapshot, then report the frozen guest
    xml = _snapshot_xml(
        name, description, memory=False, disks=_disk_targets(dom, diff), state="shutoff",
        created_at=created_at, parent=parent, domain_xml=dom.xml(inactive=True, secure=True),
    )  # fmt: skip
    try:
        dom.snapshot_create(xml, redefine=True, current=True)
    except VirtainerError:
        with contextlib.suppress(VirtainerError):  # leave no snapshot libvirt does not know
            dom.snapshot_delete_live_internal(name, str(diff))
        raise
    if thaw_failed is not None:
        raise thaw_failed
    return quiesced


THAW_ATTEMPTS = 3
THAW_PAUSE_S = 1.0


class ThawError(HypervisorError):
    """The guest's filesystems stay frozen after a snapshot: its writes block until they are thawed."""

    def __init__(self, message: str, *, snapshot_taken: bool) -> None:
        super().__init__(message, hint="thaw them with `virsh domfsthaw VM`, or reboot the guest")
        self.snapshot_taken = snapshot_taken


def _thaw(dom: Domain) -> str | None:
    """Thaw, retrying a busy agent; None when thawed, else why not."""
    problem = ""
    for attempt in range(THAW_ATTEMPTS):
        try:
            dom.fs_thaw()
            return None
        except HypervisorError as error:
            problem = error.message
        if attempt + 1 < THAW_ATTEMPTS:
            time.sleep(THAW_PAUSE_S)  # the agent is busy (or restarting): give it a moment
    return problem


@contextlib.contextmanager
def frozen_filesystems(dom: Domain) -> Iterator[bool]:
    """Freeze the guest's filesystems when its agent answers; always thaw. Yields whether frozen.

    A failed thaw is never swallowed: it raises ThawError (the guest would hang on its writes)."""
    try:
        dom.agent_command({"execute": "guest-ping"}, timeout_s=2)
    except HypervisorError:
        yield False  # no agent: the snapshot is crash-consistent, like pulling the plug
        return
    try:
        dom.fs_freeze()
    except HypervisorError:
        yield False
        return
    try:
        yield True
    except BaseException as error:
        if problem := _thaw(dom):
            raise ThawError(
                f"the snapshot of '{dom.name}' failed ({error}) and its filesystems could not be thawed: {problem}",
                snapshot_taken=False,
            ) from error
        raise
    if problem := _thaw(dom):
        raise ThawError(
            f"the snapshot of '{dom.name}' was taken, but its filesystems could not be thawed: {problem}",
            snapshot_taken=True,
        )


def _disk_targets(dom: Domain, diff: Path) -> dict[str, bool]:
    """Every disk of the domain -> whether the snapshot includes it: only the diff does, found by
    its source file whatever its bus and target (vda, sda on SATA or SCSI, hda on IDE)."""
    disks = parse_domain(dom.xml(inactive=True)).disks
    return {disk.target: disk.is_file(diff) for disk in disks if disk.target}


def _snapshot_xml(
    name: str,
    description: str,
    *,
    memory: bool,
    disks: dict[str, bool],
    state: str | None = None,
    created_at: int | None = None,
    parent: str | None = None,
    domain_xml: str | None = None,
) -> str:
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = name
    if description:
        etree.SubElement(root, "description").text = description
    if state:
        etree.SubElement(root, "state").text = state
    if created_at is not None:
        etree.SubElement(root, "creationTime").text = str(created_at)
    if parent:
        etree.SubElement(etree.SubElement(root, "parent"), "name").text = parent
    etree.SubElement(root, "memory", snapshot="internal" if memory else "no")
    if not memory:  # savevm snapshots every writable disk itself; libvirt rejects a disk list
        element = etree.SubElement(root, "disks")
        for target, included in disks.items():
            etree.SubElement(element, "disk", name=target, snapshot="internal" if included else "no")
    if domain_xml:
        root.append(etree.fromstring(domain_xml.encode()))
    return str(etree.tostring(root, encoding="unicode"))


def hardware_of(dom: Domain) -> dict[str, object]:
    """What a memory snapshot's saved state depends on: loading it into other hardware fails."""
    model = parse_domain(dom.xml(inactive=True))
    return {"memory_kib": model.memory_kib, "vcpus": model.vcpus, "machine": model.machine}


def _save_current(dom: Domain, diff: Path) -> None:
    SnapshotStore(diff).set_current(dom.snapshot_current())


# ---------------------------------------------------------------------------------------------
# Reverting and deleting


def revert(hv: Hypervisor, vm: str, name: str) -> RevertResult:
    """Go back to a snapshot, with the VM running or stopped.

    A memory snapshot resumes the VM where it was (running). A disk snapshot restores the disk;
    a running VM is powered off and started again on it (its memory is not part of the snapshot),
    a stopped VM stays stopped.
    """
    started = time.monotonic()
    dom = hv.domain(vm)
    snapshot = _get(dom, name)
    active = dom.state().active
    if snapshot.kind == "memory":
        _check_hardware(dom, snapshot)
    # libvirt puts the snapshot's copy of the definition back; the VM keeps its own, secrets too
    definition = dom.xml(inactive=True, secure=True)
    dom.snapshot_revert(name, running=snapshot.kind == "memory" or active)
    hv.define(definition)
    _save_current(dom, diff_of(dom))
    return RevertResult(_get(dom, name), dom.state(), round(time.monotonic() - started, 2))


def _check_hardware(dom: Domain, snapshot: Snapshot) -> None:
    now = hardware_of(dom)
    if snapshot.hardware and snapshot.hardware != now:
        raise ConflictError(
            f"snapshot '{snapshot.name}' holds memory state for {snapshot.hardware}, "
            f"but VM '{dom.name}' now has {now}; its memory cannot be loaded",
            hint="start the VM with the same memory, vCPUs and machine type to revert to it",
        )


def delete(hv: Hypervisor, vm: str, name: str) -> None:
    """Delete one snapshot from the diff and from the volume record. The base is never touched:
    an internal snapshot only ever lives in the diff's own qcow2 clusters."""
    dom = hv.domain(vm)
    diff = diff_of(dom)
    _get(dom, name)  # a clean 404 before anything changes
    dom.snapshot_delete(name)
    store = SnapshotStore(diff)
    store.remove(name)
    # libvirt re-parents the children of a deleted snapshot: keep the volume's copies in step
    for other in dom.snapshot_names():
        if other in store.names():
            store.save(other, dom.snapshot_xml(other))
    _save_current(dom, diff)


# ---------------------------------------------------------------------------------------------
# Restoring libvirt's metadata from the volume


def restore_saved(dom: Domain, diff: Path) -> RestoreReport:
    """Redefine the snapshots recorded beside the diff into a freshly defined domain.

    Only snapshots that really are inside the diff are restored. Each one is recorded with the
    current domain's definition (a new container defines the VM with a new UUID and its own
    paths), with only the diff as its disk.
    """
    store = SnapshotStore(diff)
    saved = store.names()
    if not saved:
        return RestoreReport([], {})
    inside = _names_inside(diff)
    known = set(dom.snapshot_names())
    domain_xml = dom.xml(inactive=True, secure=True)  # a revert starts this one: secrets too
    disks = _disk_targets(dom, diff)
    restored: list[str] = []
    skipped: dict[str, str] = {}
    for name in _creation_order(store, saved):
        if name in known:
            continue
        if name not in inside:
            skipped[name] = "not inside the diff (deleted outside virtainer?)"
            continue
        try:
            xml = _redefinition(store.xml(name), domain_xml, disks, known | set(restored))
            dom.snapshot_create(xml, redefine=True, current=name == store.current())
        except (VirtainerError, etree.XMLSyntaxError, OSError) as error:
            skipped[name] = str(error)
            continue
        restored.append(name)
    return RestoreReport(restored, skipped)


def forget_all(dom: Domain) -> list[str]:
    """Drop libvirt's record of every snapshot of the domain, leaving every disk as it is: it is
    about to be defined on another diff, which does not hold them. Returns their names."""
    names = dom.snapshot_names()
    for name in names:
        dom.snapshot_delete(name, metadata_only=True)
    return names


def _names_inside(diff: Path) -> set[str]:
    """The internal snapshots the diff itself holds (qemu-img snapshot -l)."""
    snapshots = storage.image_info(diff).get("snapshots")
    items = snapshots if isinstance(snapshots, list) else []
    return {str(item.get("name")) for item in items if isinstance(item, dict)}


def _creation_order(store: SnapshotStore, names: list[str]) -> list[str]:
    """Parents before children: libvirt refuses a redefinition whose parent it does not know."""

    def created(name: str) -> float:
        with contextlib.suppress(OSError, ValueError, etree.XMLSyntaxError):
            return float(etree.fromstring(store.xml(name).encode()).findtext("creationTime") or 0)
        return 0.0

    return sorted(names, key=lambda name: (created(name), name))


def _redefinition(saved_xml: str, domain_xml: str, disks: dict[str, bool], known: set[str]) -> str:
    document = etree.fromstring(saved_xml.encode())
    for element in document.findall("domain") + document.findall("inactiveDomain"):
        document.remove(element)
    parent = document.find("parent")
    if parent is not None and parent.findtext("name") not in known:
        document.remove(parent)
    old = document.find("disks")  # name the disks of the domain as it is defined now
    if old is not None:
        document.remove(old)
    element = etree.SubElement(document, "disks")
    for target, included in disks.items():
        etree.SubElement(element, "disk", name=target, snapshot="internal" if included else "no")
    document.append(etree.fromstring(domain_xml.encode()))
    return str(etree.tostring(document, encoding="unicode"))


def as_dict(snapshot: Snapshot) -> dict[str, object]:
    return asdict(snapshot)
