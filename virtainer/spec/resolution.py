"""Resolution: raw settings -> VmSpec, validated once.

Every invalid value raises `ConfigError` naming that setting as the user wrote it, the value
and what is accepted; nothing touches the disk before a spec exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TypedDict

from virtainer.collisions import check_distinct_files
from virtainer.firmware import UefiFirmware
from virtainer.profiles import PROFILES
from virtainer.spec.container import ContainerFacts, resolve_container_network
from virtainer.spec.dialects import supravm, virtainers
from virtainer.spec.facts import HostFacts
from virtainer.spec.model import (
    ACCELERATORS,
    CLOCK_OFFSETS,
    DEFAULT_STATE_ROOT,
    DISK_BUSES,
    DISK_CACHES,
    FIRMWARES,
    MACHINES,
    PASSWORD_POLICIES,
    VIDEO_MODELS,
    ClockOffset,
    DirectBoot,
    Firmware,
    ImageSource,
    NetworkSpec,
    VmSpec,
    VncSpec,
)
from virtainer.spec.network import (
    check_port_targets,
    check_user_mode_ports,
    parse_guest_forwards,
    parse_lan,
    parse_network,
    parse_port_rules,
)
from virtainer.spec.parsers import (
    default_user_for,
    file_url_path,
    parse_choice,
    parse_cmdline,
    parse_disk,
    parse_existing_file,
    parse_hostname,
    parse_int,
    parse_listen_address,
    parse_mac,
    parse_os_variant,
    parse_path,
    parse_profile,
    parse_ready_command,
    parse_seconds,
    parse_sha256,
    parse_size,
    parse_ssh_key,
    parse_stages,
    parse_url,
    parse_user,
    parse_vnc,
    parse_vnc_password,
)
from virtainer.spec.reader import Reader
from virtainer.spec.settings import RawValue
from virtainer.stages import Stage, default_stages
from virtainer.validators import parse_flag, parse_name, parse_password

IDE_DISKS_MAX = 3  # two IDE channels of two units each; hdc holds the seed cdrom


def resolve_spec(
    raw: Mapping[str, RawValue], host: HostFacts | None = None, container: ContainerFacts | None = None
) -> VmSpec:
    """Validate raw settings once and return the spec. Pure except for reading named files.

    `container`: the virtainer container's facts, which decide the NAT network's LAN and ports
    (or user-mode networking in its place); None outside the container."""
    host = host or HostFacts.probe()
    read = Reader(raw)
    name = read.get("name", parse_name, "vm")
    vcpus = read.get("vcpus", lambda v: parse_int(v, 1, 256), min(host.cpus, 4))
    default_memory = max(512, min(host.memory_mib // 4, 4096))
    memory_mib = read.get(
        "memory", lambda v: parse_size(v, default_unit="M", low_mib=64, high_mib=4 << 20), default_memory
    )
    disk_size_mib = read.get("disk_size", lambda v: parse_size(v, default_unit="G", low_mib=64, high_mib=64 << 20))
    image = _resolve_image(read)
    os_variant = read.get("os_variant", parse_os_variant, "generic")
    default_user = read.get("user", parse_user, default_user_for(os_variant))
    hostname = read.get("hostname", parse_hostname, _hostname_from(name))
    state_dir = read.get("state_dir", parse_path, DEFAULT_STATE_ROOT / name)
    profile = read.get("profile", parse_profile, "linux")
    storage_dir = _resolve_storage_dir(read, profile)
    diff_path = storage_dir / supravm.SYSTEM_DISK if storage_dir else _resolve_diff_path(read, state_dir, image)
    data_disks = (supravm.data_disks(storage_dir) if storage_dir else ()) + tuple(read.items("disks", parse_disk))
    if storage_dir and not (image.path or image.url) and not diff_path.exists():
        raise read.fail(
            "storage_id", f"a directory holding {supravm.SYSTEM_DISK} ({diff_path} does not exist), or set image"
        )
    keys = [key for keys in read.items("ssh_keys", parse_ssh_key) for key in keys]
    password = read.get("password", parse_password)
    policy = read.get("password_policy", lambda v: parse_choice(v, PASSWORD_POLICIES))
    policy = policy or ("fixed" if password else "auto")
    if policy == "fixed" and not password:
        raise read.fail("password_policy", "fixed needs a password (set VIRTAINER_PASSWORD or --password)")
    direct_boot = _resolve_direct_boot(read)
    network = _resolve_network_control(read, read.get("network", parse_network, NetworkSpec()), host)
    vnc = _resolve_vnc(read, host)
    if container is not None:
        network = resolve_container_network(read, network, vnc, container)
    stages = read.get("wait_for", parse_stages)
    ready_command = read.get("wait_for", parse_ready_command)
    probe = ready_command is not None
    hardware = _resolve_hardware(read, profile, supravm_layout=storage_dir is not None, host=host)
    # Windows and SupraVM system disks are not virtainer's cloud images: no cloud-init to wait for
    cloud_image = PROFILES[profile].family == "linux" and storage_dir is None
    spec = VmSpec(
        name=name,
        vcpus=vcpus,
        memory_mib=memory_mib,
        image=image,
        diff_path=diff_path,
        state_dir=state_dir,
        os_variant=os_variant,
        default_user=default_user,
        hostname=hostname,
        disk_size_mib=disk_size_mib,
        accelerator=read.get("accelerator", lambda v: parse_choice(v, ACCELERATORS), "auto"),
        ssh_authorized_keys=tuple(dict.fromkeys(keys)),
        user_data=read.get("user_data", parse_existing_file),
        meta_data=read.get("meta_data", parse_existing_file),
        network_config=read.get("network_config", parse_existing_file),
        seed_iso=read.get("seed_iso", parse_existing_file),
        seed_path=read.get("seed_path", parse_path),
        password=password,
        password_policy=policy,
        mac_address=read.get("mac", parse_mac),
        data_disks=data_disks,
        network=network,
        direct_boot=direct_boot,
        wait_for=stages or _default_stages(network, direct_boot, cloud_image=cloud_image, exec_probe=probe),
        ready_command=ready_command,
        boot_timeout_s=read.get("boot_timeout", parse_seconds, 600.0),
        stop_timeout_s=read.get("stop_timeout", parse_seconds, 60.0),
        profile=profile,
        vnc=vnc,
        storage_dir=storage_dir,
        **hardware,
    )
    check_distinct_files(spec, read.origin)
    _check_display(spec, read)
    _check_disk_bus_room(spec, read)
    return spec


def _default_stages(
    network: NetworkSpec, direct_boot: DirectBoot | None, *, cloud_image: bool, exec_probe: bool
) -> tuple[Stage, ...]:
    # user-mode networking forwarding no port to the guest's 22: its SSH cannot be reached from here
    ssh_reachable = network.mode != "user" or network.incoming_port(22) is not None
    return default_stages(
        direct_boot=direct_boot is not None, cloud_image=cloud_image, network_mode=network.mode,
        ssh_reachable=ssh_reachable, exec_probe=exec_probe,
    )  # fmt: skip


NETWORK_CONTROL = ("ports", "guest_forwards", "guest_restrict", "guest_lan")


def _resolve_network_control(read: Reader, network: NetworkSpec, host: HostFacts) -> NetworkSpec:
    """Ports, guest forwards, isolation and the LAN: done by the virtainer container's NAT network
    (iptables), or by QEMU's user-mode networking (port by port; no forwards there)."""
    given = [key for key in NETWORK_CONTROL if read.has(key)]
    if not given:
        return network
    in_container_nat = network.mode == "network" and network.source == "default" and host.in_container
    if network.mode != "user" and not in_container_nat:
        raise read.fail(
            given[0], "set only with user-mode networking (network=user) or in the virtainer container "
            "(network=default)"
        )  # fmt: skip
    network = replace(
        network,
        ports=read.get("ports", parse_port_rules),
        forwards=read.get("guest_forwards", parse_guest_forwards, ()),
        restrict=read.get("guest_restrict", parse_flag, False),
        lan=read.get("guest_lan", parse_lan),
    )
    if network.forwards and network.mode == "user":
        raise read.fail(
            "guest_forwards", "guest forwards only on the container's NAT network (network=default); "
            "user-mode networking cannot carry them"
        )  # fmt: skip
    check_port_targets(network, lambda accepted: read.fail("ports", accepted))
    if network.mode == "user":
        check_user_mode_ports(network, lambda accepted: read.fail("ports", accepted))
    return network


def _resolve_storage_dir(read: Reader, profile: str) -> Path | None:
    """SupraVM's layout: STORAGE_ROOT/{windows|linux}/{VM_STORAGE_ID}/, named after the profile's family."""
    storage_id = read.get("storage_id", supravm.parse_storage_id)
    if storage_id is None:
        if read.has("storage_root"):
            raise read.fail("storage_root", "a storage root only together with storage_id (VM_STORAGE_ID)")
        return None
    for key in ("diff", "image_dir"):
        if read.has(key):
            raise read.fail(key, "either a diff path or storage_id (SupraVM's layout), not both")
    return supravm.storage_dir(read.get("storage_root", parse_path, supravm.ROOT), profile, storage_id)


class Hardware(TypedDict):
    """The guest hardware's part of a VmSpec."""

    machine: str
    firmware: Firmware
    uefi: UefiFirmware | None
    tpm: bool
    clock_offset: ClockOffset
    disk_bus: str
    disk_cache: str | None
    nic_model: str
    virtio_drivers: bool
    video: str


def _resolve_hardware(read: Reader, profile_name: str, *, supravm_layout: bool, host: HostFacts) -> Hardware:
    """The profile's defaults, overridden setting by setting; SupraVM's layout brings SupraVM's
    hardware contract (see supravm.hardware_defaults)."""
    profile = PROFILES[profile_name]
    if read.has("windows_drivers") and profile.family != "windows":
        raise read.fail("windows_drivers", "set only with a windows profile (profile=windows, windows-7, ...)")
    defaults = supravm.hardware_defaults(profile) if supravm_layout else (profile.machine, "bios", "none")
    default_machine, default_firmware, default_drivers = defaults
    drivers = read.get("windows_drivers", lambda v: parse_choice(v, ("virtio", "none")), default_drivers)
    virtio = profile.family == "linux" or drivers == "virtio"
    machine = read.get("machine", lambda v: parse_choice(v, MACHINES), default_machine)
    firmware = read.get("firmware", lambda v: parse_choice(v, FIRMWARES), default_firmware)
    if firmware == "uefi" and profile.legacy:
        raise read.fail("firmware", f"bios: {profile.name} boots with legacy BIOS only")
    if firmware == "uefi" and host.uefi is None:
        raise read.fail("firmware", "bios: OVMF, which uefi needs, is not installed (apt-get install ovmf)", "uefi")
    tpm = read.get("tpm", lambda v: parse_choice(v, ("none", "emulated")), "none") == "emulated"
    if tpm and not host.swtpm:
        raise read.fail("tpm", "none: swtpm is not installed (apt-get install swtpm swtpm-tools)")
    default_bus = "virtio" if virtio else profile.disk_bus
    if default_bus == "ide" and machine == "q35":
        default_bus = "sata"  # q35 has no IDE controller: its AHCI is what IDE disks become there
    disk_bus = read.get("disk_bus", lambda v: parse_choice(v, DISK_BUSES), default_bus)
    if disk_bus == "ide" and machine == "q35":
        raise read.fail(
            "disk_bus" if read.has("disk_bus") else "machine",
            "IDE disks only with machine pc (q35 has no IDE controller; use sata there)",
            machine,
        )
    cache = read.get("disk_cache", lambda v: parse_choice(v, DISK_CACHES), "default")
    return Hardware(
        machine=machine,
        firmware=firmware,
        uefi=host.uefi if firmware == "uefi" else None,
        tpm=tpm,
        clock_offset=read.get("clock", lambda v: parse_choice(v, CLOCK_OFFSETS), profile.clock),
        disk_bus=disk_bus,
        disk_cache=None if cache == "default" else cache,
        nic_model="virtio" if virtio else profile.nic_model,
        virtio_drivers=virtio,
        video=read.get("video", lambda v: parse_choice(v, VIDEO_MODELS), profile.video),
    )


def _resolve_vnc(read: Reader, host: HostFacts) -> VncSpec | None:
    port = read.get("vnc", parse_vnc)
    if port is None:
        for key in ("vnc_listen", "vnc_password"):
            if read.has(key):
                raise read.fail(key, "set only together with vnc (e.g. vnc=5900)")
        return None
    # In a container, VNC is reached through the container's published port: listen on all of
    # the container's addresses, as SupraVM and RunCVM do. On a host, only locally by default.
    listen = read.get("vnc_listen", parse_listen_address, "0.0.0.0" if host.in_container else "127.0.0.1")
    password = read.get("vnc_password", parse_vnc_password)
    return VncSpec(port=port or None, listen=listen, password=password)


def _check_display(spec: VmSpec, read: Reader) -> None:
    if spec.vnc is not None and spec.video == "none":
        raise read.fail("video", "a display adapter for VNC to show (virtio, vga, cirrus or bochs), or vnc=off")


DISK_NAMES_PER_PREFIX = 26  # vda..vdz, sda..sdz: the targets domain.disk_values hands out


def _check_disk_bus_room(spec: VmSpec, read: Reader) -> None:
    disks = 1 + len(spec.data_disks)
    if spec.disk_bus == "ide" and spec.seed_bus == "ide" and disks > IDE_DISKS_MAX:
        raise read.fail(
            "disk_bus",
            f"at most {IDE_DISKS_MAX} IDE disks (the seed cdrom takes the 4th unit); "
            f"this VM has {disks}: use sata or virtio",
            spec.disk_bus,
        )
    if spec.disk_bus == "ide" and disks > IDE_DISKS_MAX + 1:
        raise read.fail("disk_bus", f"at most {IDE_DISKS_MAX + 1} IDE disks; this VM has {disks}: use sata or virtio",
                        spec.disk_bus)  # fmt: skip
    # virtio disks are vdX, SCSI and SATA ones sdX: the system disk, the data disks, and the seed
    # (a virtio disk, or a SATA cdrom on q35) share 26 names per prefix
    prefix = "vd" if spec.disk_bus == "virtio" else "sd"
    seed_shares = spec.seed_bus == ("virtio" if prefix == "vd" else "sata")
    room = DISK_NAMES_PER_PREFIX - 1 - int(seed_shares)
    if spec.disk_bus != "ide" and len(spec.data_disks) > room:
        names = f"{prefix}a..{prefix}z"
        raise read.fail(
            "disks", f"at most {room} data disks on the {spec.disk_bus} bus ({names}: the system disk"
            f"{' and the seed' if seed_shares else ''} take the rest); this VM has {len(spec.data_disks)}",
            f"{len(spec.data_disks)} disks",
        )  # fmt: skip


def _hostname_from(name: str) -> str:
    label = re.sub(r"[^A-Za-z0-9-]", "-", name).strip("-")[:63]
    return label or "vm"


def _resolve_image(read: Reader) -> ImageSource:
    path = read.get("image", parse_existing_file)
    url = read.get("image_url", parse_url)
    sha256 = read.get("image_sha256", parse_sha256)
    if path and url:
        raise read.fail("image_url", "either an image path or an image URL, not both")
    if url and url.lower().startswith("file://"):
        # a local file, named as a URL: used like a path (image_sha256, when given, is checked)
        path = read.get("image_url", lambda value: parse_existing_file(file_url_path(str(value).strip())))
        url = None
    return ImageSource(path=path, url=url, sha256=sha256)


def _resolve_diff_path(read: Reader, state_dir: Path, image: ImageSource) -> Path:
    if read.has("image_dir") and not read.has("diff"):
        diff = read.get("image_dir", parse_path, state_dir) / virtainers.DIFF_NAME
    else:
        diff = read.get("diff", parse_path, state_dir / "diff.qcow2")
    if diff.is_dir():
        raise read.fail("diff" if read.has("diff") else "image_dir", "a file path for the diff, not a directory")
    return diff


def _resolve_direct_boot(read: Reader) -> DirectBoot | None:
    kernel = read.get("kernel", parse_existing_file)
    initrd = read.get("initrd", parse_existing_file)
    cmdline = read.get("cmdline", parse_cmdline, "")
    if kernel is None:
        if initrd is not None:
            raise read.fail("initrd", "an initrd only together with a kernel (set kernel too)")
        if cmdline:
            raise read.fail("cmdline", "a command line only together with a kernel (set kernel too)")
        return None
    return DirectBoot(kernel=kernel, initrd=initrd, cmdline=cmdline)
