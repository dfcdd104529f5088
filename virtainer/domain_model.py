"""The domain as virtainer writes it and reads it back: one typed model, one parser.

The templates (domain_templates/) lay these values out; `parse_domain` reads a domain XML
(rendered here, or as libvirt returns it) back into the same types. Code that needs to know a
domain's disks, NICs, display or virtainer record asks the model, never the XML itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree  # type: ignore[import-untyped]

from virtainer.stages import Stage, in_order

METADATA_NS = "https://virtainer.dev/xmlns/vm/1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
USER_NETDEV_ID = "vtnet0"
# QEMU's device for each NIC model a profile may choose (user-mode networking's NIC is QEMU's own)
QEMU_NIC_DEVICES = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139"}


@dataclass(frozen=True)
class DiskLayout:
    path: str
    format: str
    target: str
    serial: str | None = None
    bus: str = "virtio"
    cache: str | None = None
    # The backing chain, declared so libvirt never reads it from the disk's header: `()` none
    # (an empty <backingStore/>), else (path, format) of the one base; None: not declared.
    backing: tuple[str, str] | tuple[()] | None = ()
    device: str = "disk"  # or cdrom
    readonly: bool = False

    def is_file(self, path: Path | str) -> bool:
        """This disk's source is `path` (disks are found by their file, never by a target name)."""
        return bool(self.path) and os.path.realpath(self.path) == os.path.realpath(path)


@dataclass(frozen=True)
class NicLayout:
    type: str  # network, bridge; user: QEMU's own -netdev user (qemu:commandline)
    source: str
    mac: str
    model: str = "virtio"


@dataclass(frozen=True)
class VncLayout:
    port: int  # -1 with autoport
    autoport: bool
    listen: str
    password: str | None
    socket: str | None = None  # a unix socket instead of a port (libvirt's private display)


@dataclass(frozen=True)
class DomainModel:
    """What virtainer reads back from a domain."""

    name: str
    memory_kib: int
    vcpus: int
    machine: str
    disks: tuple[DiskLayout, ...] = ()
    nics: tuple[NicLayout, ...] = ()
    vnc: VncLayout | None = None
    video: str | None = None
    agent_channel: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    qemu_args: tuple[str, ...] = ()

    def disk_of(self, path: Path | str) -> DiskLayout | None:
        return next((disk for disk in self.disks if disk.is_file(path)), None)

    def forwarded_port(self, guest_port: int, protocol: str = "tcp") -> int | None:
        """The host port user-mode networking forwards to `guest_port`, if any."""
        for arg in self.qemu_args:
            for incoming, guest in re.findall(rf"hostfwd={protocol}:[^:,]*:(\d+)-[^:,]*:(\d+)", arg):
                if int(guest) == guest_port:
                    return int(incoming)
        return None


def parse_domain(xml: str) -> DomainModel:
    """The one reader of a domain's XML (libvirt's or ours)."""
    document = etree.fromstring(xml.encode())
    devices = document.find("devices")
    if devices is None:
        devices = etree.Element("devices")
    arguments = document.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")
    qemu_args = tuple(str(arg.get("value", "")) for arg in arguments)
    record = document.find(f"metadata/{{{METADATA_NS}}}vm")
    video = devices.find("video/model")
    os_type = document.find("os/type")
    return DomainModel(
        name=document.findtext("name") or "",
        memory_kib=_kib(document.find("memory")),
        vcpus=int(document.findtext("vcpu") or 0),
        machine=os_type.get("machine", "") if os_type is not None else "",
        disks=tuple(_disk(disk) for disk in devices.iterfind("disk")),
        nics=tuple(_nic(nic) for nic in devices.iterfind("interface")) + _user_nics(qemu_args),
        vnc=_vnc(devices.find("graphics[@type='vnc']")),
        video=video.get("type") if video is not None else None,
        agent_channel=devices.find(f"channel/target[@name='{AGENT_CHANNEL}']") is not None,
        metadata=parse_metadata(record) if record is not None else {},
        qemu_args=qemu_args,
    )


def parse_metadata(record: etree._Element | str) -> dict[str, str]:
    """virtainer's record in the domain (metadata.xml.j2); libvirt returns it alone, unprefixed."""
    element = etree.fromstring(record.encode()) if isinstance(record, str) else record
    values: dict[str, str] = {}
    for child in element:
        key = etree.QName(child).localname
        values[key] = child.text or ""
        if key == "accelerator":
            values["accelerator-reason"] = child.get("reason", "")
    return values


def stages_record(stages: tuple[Stage, ...]) -> str:
    """The readiness stages `up` waits for, as the domain records them (<virtainer:wait-for>)."""
    return ",".join(stages)


def recorded_stages(metadata: dict[str, str]) -> tuple[Stage, ...]:
    """The stages a domain's record names, in readiness order; a VM recorded without: running."""
    return in_order(metadata.get("wait-for", "").split(",")) or ("running",)


_UNITS_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "kib": 1, "k": 1, "mib": 1024, "m": 1024, "gib": 1 << 20, "g": 1 << 20}


def _kib(element: etree._Element | None) -> int:
    if element is None or not element.text:
        return 0
    return int(int(element.text) * _UNITS_KIB.get(element.get("unit", "KiB").lower(), 1))


def _disk(disk: etree._Element) -> DiskLayout:
    driver, source, target = disk.find("driver"), disk.find("source"), disk.find("target")
    return DiskLayout(
        path=source.get("file", "") if source is not None else "",
        format=driver.get("type", "") if driver is not None else "",
        target=target.get("dev", "") if target is not None else "",
        serial=disk.findtext("serial"),
        bus=target.get("bus", "") if target is not None else "",
        cache=driver.get("cache") if driver is not None else None,
        backing=_backing(disk.find("backingStore")),
        device=disk.get("device", "disk"),
        readonly=disk.find("readonly") is not None,
    )


def _backing(store: etree._Element | None) -> tuple[str, str] | tuple[()] | None:
    if store is None:
        return None
    source, format_ = store.find("source"), store.find("format")
    if source is None:
        return ()
    return source.get("file", ""), format_.get("type", "") if format_ is not None else ""


def _nic(nic: etree._Element) -> NicLayout:
    source, mac, model = nic.find("source"), nic.find("mac"), nic.find("model")
    return NicLayout(
        type=nic.get("type", ""),
        source=(source.get("network") or source.get("bridge") or "") if source is not None else "",
        mac=mac.get("address", "") if mac is not None else "",
        model=model.get("type", "") if model is not None else "",
    )


def _user_nics(qemu_args: tuple[str, ...]) -> tuple[NicLayout, ...]:
    models = {device: model for model, device in QEMU_NIC_DEVICES.items()}
    found: list[NicLayout] = []
    for arg in qemu_args:
        device, _, options = arg.partition(",")
        values = dict(option.partition("=")[::2] for option in options.split(","))
        if device in models and values.get("netdev") == USER_NETDEV_ID:
            found.append(NicLayout("user", "", values.get("mac", ""), models[device]))
    return tuple(found)


def _vnc(graphics: etree._Element | None) -> VncLayout | None:
    if graphics is None:
        return None
    listen = graphics.find("listen")
    socket = graphics.get("socket") or (listen.get("socket") if listen is not None else None)
    return VncLayout(
        port=int(graphics.get("port") or -1),
        autoport=graphics.get("autoport") == "yes",
        listen=graphics.get("listen") or "",
        password=graphics.get("passwd"),
        socket=socket,
    )
