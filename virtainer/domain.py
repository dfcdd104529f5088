"""Domain XML: computed from a VmSpec, laid out by the Jinja templates, validated before use."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2
from lxml import etree

from virtainer.accel import AcceleratorChoice
from virtainer.errors import VirtainerError
from virtainer.spec import VmSpec

METADATA_NS = "https://virtainer.dev/xmlns/vm/1"
LIBVIRT_SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")
_DATA_DISK_TARGETS = [f"vd{chr(c)}" for c in range(ord("b"), ord("z") + 1)]


class InvalidDomainXml(VirtainerError):
    """A rendered document failed to parse or to validate: a bug in a template, never user input."""


@dataclass(frozen=True)
class DiskLayout:
    path: str
    format: str
    target: str
    serial: str


@dataclass(frozen=True)
class NicLayout:
    type: str
    source: str
    mac: str


def default_mac(spec: VmSpec) -> str:
    """A stable MAC for a diff: the guest OS sees the same NIC at every start."""
    digest = hashlib.sha256(str(spec.diff_path).encode()).digest()
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in digest[:3])


def layout_values(
    spec: VmSpec, accelerator: AcceleratorChoice, *, seed_path: Path | None, disk_formats: dict[Path, str]
) -> dict[str, object]:
    """Everything the templates need, computed here so the templates stay simple."""
    boot = spec.direct_boot
    nic = None
    if spec.network.mode != "none":
        nic = NicLayout(spec.network.mode, spec.network.source, spec.mac_address or default_mac(spec))
    q35 = spec.machine == "q35"
    return {
        "domain_type": accelerator.domain_type,
        "metadata_ns": METADATA_NS,
        "name": spec.name,
        "title": f"virtainer VM {spec.name} ({spec.os_variant})",
        "accelerator": accelerator.kind,
        "accelerator_reason": accelerator.reason,
        "diff_path": str(spec.diff_path),
        "state_dir": str(spec.state_dir),
        "serial_log": str(spec.serial_log_path),
        "default_user": spec.default_user or "",
        "wait_for": ",".join(spec.wait_for),
        "memory_mib": spec.memory_mib,
        "vcpus": spec.vcpus,
        "machine": spec.machine,
        "cpu_mode": "host-passthrough" if accelerator.kind == "kvm" else None,
        "kernel": str(boot.kernel) if boot else None,
        "initrd": str(boot.initrd) if boot and boot.initrd else None,
        "cmdline": boot.cmdline if boot else "",
        "data_disks": [
            DiskLayout(str(disk.path), disk_formats.get(disk.path, "qcow2"), target, f"data{index}")
            for index, (disk, target) in enumerate(zip(spec.data_disks, _DATA_DISK_TARGETS, strict=False))
        ],
        "seed_path": str(seed_path) if seed_path else None,
        "cdrom_bus": "sata" if q35 else "ide",
        "cdrom_target": "sda" if q35 else "hdc",
        "nic": nic,
    }


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("virtainer", "domain_templates"),
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
) -> str:
    if len(spec.data_disks) > len(_DATA_DISK_TARGETS):
        raise VirtainerError(f"at most {len(_DATA_DISK_TARGETS)} data disks are supported")
    values = layout_values(spec, accelerator, seed_path=seed_path, disk_formats=disk_formats or {})
    rendered = _environment().get_template("domain.xml.j2").render(values)
    document = validate_domain_xml(rendered)
    etree.indent(document, space="  ")
    return etree.tostring(document, encoding="unicode") + "\n"


@functools.cache
def _schema() -> etree.RelaxNG | None:
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
    return _schema() is not None
