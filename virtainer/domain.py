"""Domain XML: computed from a VmSpec, laid out by the Jinja templates, validated before use."""

from __future__ import annotations

import contextlib
import functools
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from lxml import etree  # type: ignore[import-untyped]

from virtainer.accel import AcceleratorChoice
from virtainer.domain_model import (
    METADATA_NS,
    QEMU_NIC_DEVICES,
    QEMU_NS,
    USER_NETDEV_ID,
    DiskLayout,
    NicLayout,
    VncLayout,
    stages_record,
)
from virtainer.errors import VirtainerError
from virtainer.nic import default_mac
from virtainer.profiles import HYPERV_SPINLOCK_RETRIES, PROFILES, Profile
from virtainer.spec import VmSpec

LIBVIRT_SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")
# Under TCG the guest gets QEMU's default model, qemu64, without AMD-V: with svm a Linux guest's
# udev loads kvm and kvm_amd during early boot, CPU time the emulated guest takes from the
# kernel's and cloud-init's start (nested virtualization inside TCG is of no use anyway).
TCG_CPU_MODEL = "qemu64"
TCG_CPU_DISABLED_FEATURES = ("svm",)


class InvalidDomainXml(VirtainerError):
    """A rendered document failed to parse or to validate: a bug in a template, never user input."""


@dataclass(frozen=True)
class HyperVFeature:
    name: str
    retries: int | None = None


@dataclass(frozen=True)
class TimerLayout:
    name: str
    tickpolicy: str | None = None
    present: str | None = None


# ---------------------------------------------------------------------------------------------
# Configurators: one per section of the domain, each computing only its own template values and
# leaving its section out when the spec does not ask for it. Templates only lay the values out.


@dataclass(frozen=True)
class LayoutInput:
    spec: VmSpec
    accelerator: AcceleratorChoice
    seed_path: Path | None
    disk_formats: dict[Path, str]
    diff_base: tuple[Path, str] | None = None  # the base image the diff was made on, and its format

    @property
    def profile(self) -> Profile:
        return PROFILES[self.spec.profile]

    @property
    def hyperv(self) -> tuple[str, ...]:
        """Hyper-V enlightenments: KVM only (QEMU's TCG refuses vpindex and friends)."""
        return self.profile.hyperv if self.accelerator.kind == "kvm" else ()


def identity_values(given: LayoutInput) -> dict[str, object]:
    spec = given.spec
    return {
        "domain_type": given.accelerator.domain_type,
        "name": spec.name,
        "title": f"virtainer VM {spec.name} ({spec.os_variant})",
        "memory_mib": spec.memory_mib,
        "vcpus": spec.vcpus,
        "cpu_mode": "host-passthrough" if given.accelerator.kind == "kvm" else None,
        "tcg_cpu_model": None if given.accelerator.kind == "kvm" else TCG_CPU_MODEL,
        "tcg_cpu_disabled": () if given.accelerator.kind == "kvm" else TCG_CPU_DISABLED_FEATURES,
    }


def metadata_values(given: LayoutInput) -> dict[str, object]:
    spec = given.spec
    return {
        "metadata_ns": METADATA_NS,
        "qemu_ns": QEMU_NS,
        "accelerator": given.accelerator.kind,
        "accelerator_reason": given.accelerator.reason,
        "diff_path": str(spec.diff_path),
        "state_dir": str(spec.state_dir),
        "serial_log": str(spec.serial_log_path),
        "default_user": spec.default_user or "",
        "wait_for": stages_record(spec.wait_for),
        "ready_command": spec.ready_command,
    }


def os_values(given: LayoutInput) -> dict[str, object]:
    """Machine, firmware (UEFI: OVMF read-only + the VM's NVRAM beside the diff), direct boot."""
    spec, boot, uefi = given.spec, given.spec.direct_boot, given.spec.uefi
    return {
        "machine": spec.machine,
        "loader": str(uefi.code) if uefi else None,
        "nvram": str(spec.nvram_path) if uefi else None,
        "nvram_template": str(uefi.vars_template) if uefi else None,
        "kernel": str(boot.kernel) if boot else None,
        "initrd": str(boot.initrd) if boot and boot.initrd else None,
        "cmdline": boot.cmdline if boot else "",
    }


def features_values(given: LayoutInput) -> dict[str, object]:
    retries = {"spinlocks": HYPERV_SPINLOCK_RETRIES}
    return {"hyperv": [HyperVFeature(name, retries.get(name)) for name in given.hyperv]}


def clock_values(given: LayoutInput) -> dict[str, object]:
    """Windows keeps time better with these timers (what virt-install gives Windows guests)."""
    timers: list[TimerLayout] = []
    if given.profile.family == "windows":
        timers = [TimerLayout("rtc", tickpolicy="catchup"), TimerLayout("pit", tickpolicy="delay"),
                  TimerLayout("hpet", present="no")]  # fmt: skip
        if "stimer" in given.hyperv:
            timers.append(TimerLayout("hypervclock", present="yes"))  # stimer needs it
    return {"clock_offset": given.spec.clock_offset, "clock_timers": timers}


_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


def disk_values(given: LayoutInput) -> dict[str, object]:
    """The system disk (the diff), data disks in order, then the seed; targets never collide.

    The seed is a read-only virtio disk when the guest has virtio drivers, else a cdrom (SATA on
    q35, IDE's hdc on pc): see VmSpec.seed_bus."""
    spec = given.spec
    taken = {"hdc"} if spec.seed_bus == "ide" else set()  # the IDE cdrom keeps hdc (secondary master)

    def target(bus: str) -> str:
        prefix = _TARGET_PREFIX[bus]
        name = next((prefix + chr(c) for c in range(ord("a"), ord("z") + 1) if prefix + chr(c) not in taken), None)
        if name is None:
            raise VirtainerError(f"too many disks on the {bus} bus")
        taken.add(name)
        return name

    bus, cache = spec.disk_bus, spec.disk_cache
    system = DiskLayout(
        str(spec.diff_path), given.disk_formats.get(spec.diff_path, "qcow2"), target(bus), bus=bus, cache=cache,
        backing=_diff_backing(given),
    )  # fmt: skip
    data = [
        DiskLayout(str(disk.path), given.disk_formats.get(disk.path, "qcow2"), target(bus), f"data{index}", bus, cache)
        for index, disk in enumerate(spec.data_disks)
    ]
    return {
        "system_disk": system,
        "data_disks": data,
        "scsi_controller": bus == "scsi",
        "seed_path": str(given.seed_path) if given.seed_path else None,
        "seed_bus": spec.seed_bus,
        "seed_target": "hdc" if spec.seed_bus == "ide" else target(spec.seed_bus),
    }


def _diff_backing(given: LayoutInput) -> tuple[str, str] | tuple[()] | None:
    """The diff's own base, explicit; a standalone system disk (no base image) has none. Without
    a base image given (`virtainer render`), the chain is left to the diff's header, which
    virtainer wrote: declaring none would hide the base from the guest."""
    if given.diff_base is not None:
        return str(given.diff_base[0].resolve()), given.diff_base[1]
    return () if given.spec.diff_path in given.disk_formats else None


def network_values(given: LayoutInput) -> dict[str, object]:
    """A libvirt <interface>; or, for user-mode networking with port forwards, an isolated guest or
    a chosen LAN, QEMU's own -netdev user (libvirt 9.0 forwards no port for slirp, and its passt
    backend, which would, is not built in Debian 12's)."""
    spec, net = given.spec, given.spec.network
    if net.mode == "none":
        return {"nic": None, "qemu_args": []}
    mac = spec.mac_address or default_mac(spec)  # decided by nic.with_nic_mac on `up` and `render`
    if net.mode == "user" and net.controlled:
        return {"nic": None, "qemu_args": user_netdev_args(spec, mac)}
    return {"nic": NicLayout(net.mode, net.source, mac, spec.nic_model), "qemu_args": []}


def user_netdev_args(spec: VmSpec, mac: str) -> list[str]:
    """-netdev user,... with one hostfwd per forwarded port, and the NIC on it."""
    net = spec.network
    options = ["user", f"id={USER_NETDEV_ID}"]
    if net.lan is not None:
        # the same addresses as the container's NAT network: gateway .1, guest .2 (first lease)
        options += [f"net={net.lan}", f"host={net.gateway}", f"dhcpstart={net.guest_ip}",
                    f"dns={net.lan.network_address + 3}"]  # fmt: skip
    if net.restrict:
        options.append("restrict=on")
    for rule in net.ports or ():
        target = str(rule.target) if rule.target else ""
        options += [f"hostfwd={rule.protocol}::{incoming}-{target}:{guest}" for incoming, guest in rule.pairs()]
    # libvirt does not know this device: give it a root-bus slot libvirt leaves free (it fills pc's
    # from 0x02 up; q35 has ICH9 at 0x1f and libvirt's PCI bridge, when one is needed, at 0x1e)
    slot = "0x1b" if spec.machine == "q35" else "0x1f"
    device = f"{QEMU_NIC_DEVICES[spec.nic_model]},netdev={USER_NETDEV_ID},mac={mac},addr={slot}"
    return ["-netdev", ",".join(options), "-device", device]


def display_values(given: LayoutInput) -> dict[str, object]:
    """VNC when asked for; a display adapter with it, and always for Windows (its console is the screen).

    A display adapter without a VNC setting still gets a VNC display on a unix socket libvirt
    makes (and only libvirt, QEMU and root can open): the REST API's screen proxy reaches it,
    nothing is published."""
    spec, vnc = given.spec, given.spec.vnc
    wanted = vnc is not None or given.profile.family == "windows"
    video = spec.video if wanted and spec.video != "none" else None
    graphics = None
    if vnc is not None:
        graphics = VncLayout(vnc.port or -1, vnc.port is None, vnc.listen, vnc.password)
    return {"graphics": graphics, "private_vnc": video is not None and graphics is None, "video": video}


def tpm_values(given: LayoutInput) -> dict[str, object]:
    if not given.spec.tpm:
        return {"tpm_model": None}
    return {"tpm_model": "tpm-crb" if given.spec.machine == "q35" else "tpm-tis"}


Configurator = Callable[[LayoutInput], dict[str, object]]
CONFIGURATORS: tuple[Configurator, ...] = (
    identity_values,
    metadata_values,
    os_values,
    features_values,
    clock_values,
    disk_values,
    network_values,
    display_values,
    tpm_values,
)


def layout_values(
    spec: VmSpec,
    accelerator: AcceleratorChoice,
    *,
    seed_path: Path | None,
    disk_formats: dict[Path, str],
    diff_base: tuple[Path, str] | None = None,
) -> dict[str, object]:
    """Everything the templates need, computed here so the templates stay simple."""
    given = LayoutInput(spec, accelerator, seed_path, disk_formats, diff_base)
    values: dict[str, object] = {}
    for configure in CONFIGURATORS:
        section = configure(given)
        assert not values.keys() & section.keys(), f"{configure.__name__} redefines {values.keys() & section.keys()}"
        values.update(section)
    return values


class TemplateCodeCache(jinja2.FileSystemBytecodeCache):
    """The templates' compiled code, kept between runs in Jinja's private per-user directory
    (mode 0700 in the temporary directory): compiling them cost ~20 ms of every start. Entries
    are checked against the templates' source and Python's version; a cache that cannot be read
    or written costs that time again, never a render."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError):
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def template_code_cache() -> TemplateCodeCache | None:
    try:
        return TemplateCodeCache()
    except (OSError, RuntimeError):  # Jinja found no private directory for this user
        return None


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("virtainer", "domain_templates"),
        bytecode_cache=template_code_cache(),
        autoescape=True,  # select_autoescape(["xml"]) would not match "*.xml.j2"
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_domain_xml(
    spec: VmSpec,
    accelerator: AcceleratorChoice,
    *,
    seed_path: Path | None,
    disk_formats: dict[Path, str] | None = None,
    diff_base: tuple[Path, str] | None = None,
) -> str:
    values = layout_values(spec, accelerator, seed_path=seed_path, disk_formats=disk_formats or {}, diff_base=diff_base)
    rendered = _environment().get_template("domain.xml.j2").render(values)
    document = validate_domain_xml(rendered)
    etree.indent(document, space="  ")
    return str(etree.tostring(document, encoding="unicode")) + "\n"


def _schema() -> etree.RelaxNG | None:
    # Compiled per use (~0.1 s), not cached: the compiled schema holds ~4 MiB that a long-running
    # controller would keep for nothing between its rare renders.
    if not LIBVIRT_SCHEMA.exists():
        return None  # the host has no libvirt schemas: parse-only validation
    return etree.RelaxNG(file=str(LIBVIRT_SCHEMA))


def validate_domain_xml(xml: str) -> etree._Element:
    """Parse and validate against libvirt's RelaxNG schema (when the host ships it)."""
    parser = etree.XMLParser(remove_blank_text=True)
    try:
        document = etree.fromstring(xml.encode(), parser)
    except etree.XMLSyntaxError as error:
        raise InvalidDomainXml(f"rendered domain XML does not parse: {error}") from None
    schema = _schema()
    if schema is not None and not schema.validate(document):
        raise InvalidDomainXml(f"rendered domain XML fails libvirt's schema: {schema.error_log.last_error}")
    return document


def schema_available() -> bool:
    return LIBVIRT_SCHEMA.exists()
