"""Domain XML: golden files per case, each validated against libvirt's RelaxNG schema."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lxml import etree

from virtainer.accel import AcceleratorChoice
from virtainer.domain import InvalidDomainXml, render_domain_xml, schema_available, validate_domain_xml
from virtainer.firmware import UefiFirmware
from virtainer.spec import DataDisk, DirectBoot, HostFacts, ImageSource, NetworkSpec, RawValue, VmSpec, resolve_spec

GOLDEN = Path(__file__).parent / "golden"
TCG = AcceleratorChoice("tcg", "forced by accelerator=tcg")
KVM = AcceleratorChoice("kvm", "KVM is usable")


def base_spec(**changes: object) -> VmSpec:
    values: dict[str, object] = {
        "name": "web",
        "vcpus": 2,
        "memory_mib": 1024,
        "image": ImageSource(path=Path("/images/debian-12.qcow2")),
        "diff_path": Path("/mounted/local_image.qcow2"),
        "state_dir": Path("/var/lib/virtainer/web"),
        "os_variant": "debian12",
        "default_user": "debian",
        "hostname": "web",
    }
    values.update(changes)
    return VmSpec(**values)  # type: ignore[arg-type]


CASES: dict[str, tuple[VmSpec, AcceleratorChoice, Path | None]] = {
    "cloud-tcg-nat": (base_spec(), TCG, Path("/var/lib/virtainer/web/seed.iso")),
    "kvm-q35-bridge-disks": (
        base_spec(
            vcpus=8,
            memory_mib=8192,
            machine="q35",
            mac_address="52:54:00:aa:bb:cc",
            network=NetworkSpec("bridge", "br0"),
            data_disks=(
                DataDisk(Path("/disks/data0.qcow2")),
                DataDisk(Path("/disks/docker.raw"), 1024, "ext4", "/var/lib/docker"),
            ),
        ),
        KVM,
        Path("/seed/cloud_init.iso"),
    ),  # fmt: skip
    "tiny-direct-boot-no-network": (
        base_spec(
            name="tiny",
            memory_mib=256,
            vcpus=1,
            network=NetworkSpec("none", ""),
            os_variant="generic",
            default_user=None,
            direct_boot=DirectBoot(Path("/guests/vmlinuz"), Path("/guests/initrd.gz"), "console=ttyS0 guestmode=serve"),
            wait_for=("running",),
        ),
        TCG,
        None,
    ),  # fmt: skip
    "escaping-user-network": (
        base_spec(
            diff_path=Path("/data/<&'\"odd>/diff.qcow2"),
            state_dir=Path("/state/a&b"),
            network=NetworkSpec("user", ""),
            default_user="o'brien",
        ),
        AcceleratorChoice("tcg", 'KVM unusable: "quoted" <reason> & more'),
        Path("/state/a&b/seed.iso"),
    ),  # fmt: skip
}


OVMF = UefiFirmware(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"))
HOST = HostFacts(cpus=4, memory_mib=8192, uefi=OVMF, swtpm=True)
SEED = Path("/var/lib/virtainer/vm/seed.iso")


def resolved(**settings: object) -> VmSpec:
    """A spec the way users get one: from settings, through the profiles' defaults."""
    values: dict[str, object] = {"name": "vm", "vcpus": 2, "memory": "4G", "diff": "/vms/vm/sys.qcow2"}
    values.update(settings)
    return resolve_spec({key: RawValue(value, key) for key, value in values.items()}, HOST)


# One golden domain per guest hardware profile, firmware and display choice.
CASES.update({
    "profile-linux-scsi-nocache": (
        resolved(profile="linux", disk_bus="scsi", disk_cache="none", disks=["/vms/vm/data0.qcow2"]), TCG, SEED
    ),
    "profile-windows-kvm": (resolved(profile="windows", disks=["/vms/vm/data0.qcow2"]), KVM, SEED),
    "profile-windows-virtio-tcg-utc": (resolved(profile="windows", windows_drivers="virtio", clock="utc"), TCG, SEED),
    "profile-windows-7-kvm": (resolved(profile="windows-7", disks=["/vms/vm/data0.qcow2"]), KVM, SEED),
    "profile-windows-2003": (resolved(profile="windows-2003"), KVM, SEED),
    "profile-windows-xp": (resolved(profile="windows-xp", disks=["/vms/vm/d0.qcow2", "/vms/vm/d1.qcow2"]), TCG, SEED),
    "uefi-linux-q35": (resolved(firmware="uefi", machine="q35"), TCG, SEED),
    "uefi-tpm-windows-11": (resolved(profile="windows-11", firmware="uefi", tpm="emulated"), KVM, SEED),
    "vnc-linux-password": (resolved(vnc="5999", vnc_listen="0.0.0.0", vnc_password="s3<r&t'"), TCG, SEED),
    "vnc-auto-xp-cirrus": (resolved(profile="windows-xp", vnc="auto"), TCG, SEED),
    # user-mode networking with port forwards / a chosen LAN / isolation: QEMU's own -netdev user
    "user-network-ports-lan": (
        resolved(network="user", ports="tcp:2222:22 udp:5353:53 tcp:9000-9001:8000-8001", guest_lan="10.9.8.0/24",
                 mac="52:54:00:12:34:56"),
        TCG, SEED,
    ),
    "user-network-restrict-q35-e1000": (
        resolved(network="user", guest_restrict="1", profile="windows", mac="52:54:00:12:34:57"), TCG, SEED
    ),
})  # fmt: skip


def test_user_network_with_ports_is_qemu_netdev_on_a_free_slot() -> None:
    spec, accelerator, seed = CASES["user-network-ports-lan"]
    document = etree.fromstring(render_domain_xml(spec, accelerator, seed_path=seed).encode())
    assert document.find("devices/interface") is None  # libvirt does not know this NIC
    args = [arg.get("value") for arg in document.findall("{http://libvirt.org/schemas/domain/qemu/1.0}commandline/*")]
    assert args == [
        "-netdev",
        "user,id=vtnet0,net=10.9.8.0/24,host=10.9.8.1,dhcpstart=10.9.8.2,dns=10.9.8.3,hostfwd=tcp::2222-:22,"
        "hostfwd=udp::5353-:53,hostfwd=tcp::9000-:8000,hostfwd=tcp::9001-:8001",
        "-device",
        "virtio-net-pci,netdev=vtnet0,mac=52:54:00:12:34:56,addr=0x1f",
    ]
    spec, accelerator, seed = CASES["user-network-restrict-q35-e1000"]
    xml = render_domain_xml(spec, accelerator, seed_path=seed)
    assert "user,id=vtnet0,restrict=on" in xml and "e1000,netdev=vtnet0,mac=52:54:00:12:34:57,addr=0x1b" in xml


def canonical(xml: str) -> str:
    return etree.canonicalize(xml, strip_text=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_xml_matches_golden_file(case: str) -> None:
    spec, accelerator, seed = CASES[case]
    diff_base = (spec.image.path, "qcow2") if spec.image.path else None  # explicit, as `up` renders it
    formats = {Path("/disks/docker.raw"): "raw"}
    xml = render_domain_xml(spec, accelerator, seed_path=seed, disk_formats=formats, diff_base=diff_base)
    golden = GOLDEN / f"{case}.xml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(xml)
    assert canonical(xml) == canonical(golden.read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_files_validate_against_libvirt_schema(case: str) -> None:
    assert schema_available(), "libvirt's RelaxNG schemas are missing (/usr/share/libvirt/schemas)"
    validate_domain_xml((GOLDEN / f"{case}.xml").read_text())


def test_escaping_survives_round_trip() -> None:
    spec, accelerator, seed = CASES["escaping-user-network"]
    document = etree.fromstring(render_domain_xml(spec, accelerator, seed_path=seed).encode())
    assert document.find("devices/disk/source").get("file") == "/data/<&'\"odd>/diff.qcow2"
    reason = document.find("metadata/{*}vm/{*}accelerator").get("reason")
    assert reason == 'KVM unusable: "quoted" <reason> & more'


def test_accelerator_decides_domain_type_and_cpu() -> None:
    for accelerator, domain_type, cpu in ((TCG, "qemu", "custom"), (KVM, "kvm", "host-passthrough")):
        document = etree.fromstring(render_domain_xml(base_spec(), accelerator, seed_path=None).encode())
        assert document.get("type") == domain_type
        assert document.find("cpu").get("mode") == cpu


def test_tcg_guest_cpu_has_no_amd_v() -> None:
    """Under TCG the guest sees qemu64 without svm, so its udev loads no kvm modules at boot."""
    document = etree.fromstring(render_domain_xml(base_spec(), TCG, seed_path=None).encode())
    assert document.findtext("cpu/model") == "qemu64"
    assert [(f.get("policy"), f.get("name")) for f in document.findall("cpu/feature")] == [("disable", "svm")]
    kvm = etree.fromstring(render_domain_xml(base_spec(), KVM, seed_path=None).encode())
    assert kvm.find("cpu/model") is None and kvm.find("cpu/feature") is None  # the host's CPU, nested virt kept


def test_schema_rejects_an_invalid_document() -> None:
    assert schema_available()
    with pytest.raises(InvalidDomainXml, match="libvirt's schema"):
        validate_domain_xml("<domain type='qemu'><name>x</name><memory>lots</memory></domain>")
    with pytest.raises(InvalidDomainXml, match="does not parse"):
        validate_domain_xml("<domain")
