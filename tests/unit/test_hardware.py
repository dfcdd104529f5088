"""Guest hardware: profiles and their aliases, VNC settings, SupraVM's disk layout, standalone
system disks, UEFI NVRAM beside the diff, and how OVMF is found. Real qemu-img where disks are."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from virtainer import machine, storage
from virtainer.errors import BaseMismatchError, ConfigError
from virtainer.firmware import UefiFirmware, find_ovmf
from virtainer.spec import HostFacts, RawValue, VmSpec, resolve_spec, settings_from_env

OVMF = UefiFirmware(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"))
HOST = HostFacts(cpus=4, memory_mib=8192, uefi=OVMF, swtpm=True)


def from_env(env: dict[str, str], host: HostFacts = HOST) -> VmSpec:
    return resolve_spec(settings_from_env(env), host)


def resolve(host: HostFacts = HOST, **values: object) -> VmSpec:
    return resolve_spec({key: RawValue(value, key) for key, value in values.items()}, host)


def hardware(spec: VmSpec) -> tuple[object, ...]:
    return (spec.profile, spec.machine, spec.firmware, spec.disk_bus, spec.nic_model, spec.video, spec.clock_offset)


WIN = ("windows", "q35", "bios")  # the windows profile's machine and firmware
LOCAL = "localtime"


# -- profiles -----------------------------------------------------------------------------------


def test_linux_is_the_default_and_changes_nothing() -> None:
    spec = resolve()
    assert hardware(spec) == ("linux", "pc", "bios", "virtio", "virtio", "virtio", "utc")
    assert (spec.tpm, spec.vnc, spec.uefi, spec.disk_cache) == (False, None, None, None)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"profile": "windows"}, (*WIN, "sata", "e1000", "vga", LOCAL)),
        ({"profile": "windows", "windows_drivers": "virtio"}, (*WIN, "virtio", "virtio", "vga", LOCAL)),
        ({"profile": "windows-11", "clock": "utc"}, (*WIN, "sata", "e1000", "vga", "utc")),
        ({"profile": "windows-7"}, ("windows-7", "pc", "bios", "ide", "e1000", "vga", LOCAL)),
        ({"profile": "windows-2008r2"}, ("windows-7", "pc", "bios", "ide", "e1000", "vga", LOCAL)),
        ({"profile": "windows-2003"}, ("windows-2003", "pc", "bios", "ide", "rtl8139", "cirrus", LOCAL)),
        ({"profile": "windows-xp"}, ("windows-xp", "pc", "bios", "ide", "rtl8139", "cirrus", LOCAL)),
        (
            {"profile": "windows-xp", "machine": "q35"},  # q35 has no IDE: its AHCI is what IDE disks become
            ("windows-xp", "q35", "bios", "sata", "rtl8139", "cirrus", LOCAL),
        ),
        (
            {"profile": "WINDOWS-XP", "disk_bus": "virtio", "video": "vga"},
            ("windows-xp", "pc", "bios", "virtio", "rtl8139", "vga", LOCAL),
        ),
        ({"firmware": "uefi", "machine": "q35"}, ("linux", "q35", "uefi", "virtio", "virtio", "virtio", "utc")),
    ],
)  # fmt: skip
def test_profiles_supply_defaults_and_settings_win(settings: dict[str, str], expected: tuple[str, ...]) -> None:
    assert hardware(resolve(**settings)) == expected


def test_uefi_and_tpm_take_the_hosts_firmware() -> None:
    spec = resolve(profile="windows", firmware="uefi", tpm="emulated", diff="/vms/w/sys.qcow2")
    assert spec.uefi == OVMF and spec.tpm
    assert spec.nvram_path == Path("/vms/w/sys.qcow2.nvram.fd")


def test_windows_waits_for_running_and_an_address_only() -> None:
    assert resolve(profile="windows").wait_for == ("running", "ip")
    assert resolve(profile="windows-xp", network="none").wait_for == ("running",)
    assert resolve(profile="windows", wait_for="running,ip,agent").wait_for == ("running", "ip", "agent")


# -- SupraVM's and RunCVM's names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "profile"),
    [
        ({"SUPRA_APPS": "windows"}, "windows"),
        ({"SUPRA_APPS": "linux"}, "linux"),
        ({"SUPRA_APPS": "windows", "VM_OS_SUB_VER": "windows-10"}, "windows"),
        ({"SUPRA_APPS": "windows", "VM_OS_SUB_VER": "windows-xp"}, "windows-xp"),
        ({"SUPRA_APPS": "windows", "VM_OS_SUB_VER": "windows-7"}, "windows-7"),
        ({"SUPRA_APPS": "windows", "VM_OS_SUB_VER": "windows-2003"}, "windows-2003"),
        ({"VM_OS_SUB_VER": "windows-11"}, "windows"),
        ({"SUPRA_APPS": "windows", "VIRTAINER_PROFILE": "windows-7"}, "windows-7"),  # a release of the family
    ],
)
def test_supravm_names_choose_the_profile(env: dict[str, str], profile: str) -> None:
    assert from_env(env).profile == profile


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SUPRA_APPS": "macos"}, "invalid SUPRA_APPS='macos': windows or linux"),
        ({"SUPRA_APPS": "windows,linux"}, "invalid SUPRA_APPS='windows,linux': windows or linux"),
        ({"SUPRA_APPS": "linux", "VM_OS_SUB_VER": "windows-7"}, "invalid VM_OS_SUB_VER='windows-7': a Windows release"),
        ({"VM_OS_SUB_VER": "windows-95"}, "invalid VM_OS_SUB_VER='windows-95': linux, windows"),
        ({"VM_GUEST_VNC": "please"}, "invalid VM_GUEST_VNC='please': 1 (VNC on port 5999), 0"),
        ({"VM_GUEST_VNC": "80"}, "invalid VM_GUEST_VNC='80': off, on (port 5900), auto, or a TCP port"),
        ({"RUNCVM_DISPLAY_MODE": "x11"}, "invalid RUNCVM_DISPLAY_MODE='x11': headless, serial or vnc"),
        ({"RUNCVM_DISPLAY_MODE": "vnc", "RUNCVM_QEMU_VNC_DISPLAY": "one"}, "invalid RUNCVM_QEMU_VNC_DISPLAY='one'"),
        ({"RUNCVM_QEMU_VGA": "qxl"}, "invalid RUNCVM_QEMU_VGA='qxl': one of virtio, vga"),
        ({"VM_STORAGE_ID": "a/b"}, "invalid VM_STORAGE_ID='a/b': a directory name"),
        # one setting under two names, with two meanings: refused naming both (never one preferred)
        ({"VIRTAINER_VNC": "auto", "VM_GUEST_VNC": "1"},
         "invalid VM_GUEST_VNC='5999': the same setting as VIRTAINER_VNC='auto'"),
        ({"SUPRA_APPS": "linux", "VIRTAINER_PROFILE": "windows"},
         "invalid SUPRA_APPS='linux': the same setting as VIRTAINER_PROFILE='windows'"),
    ],
)  # fmt: skip
def test_alias_errors_name_the_variable_the_user_set(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_env(env)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "port"),
    [
        ({"VM_GUEST_VNC": "1"}, 5999),  # SupraVM: QEMU display :99
        ({"VM_GUEST_VNC": "0"}, None),
        ({"VM_GUEST_VNC": "6001"}, 6001),
        ({"RUNCVM_DISPLAY_MODE": "vnc"}, 5900),
        ({"RUNCVM_DISPLAY_MODE": "vnc", "RUNCVM_QEMU_VNC_DISPLAY": "3"}, 5903),
        ({"RUNCVM_DISPLAY_MODE": "headless", "RUNCVM_QEMU_VNC_DISPLAY": "2"}, 5902),
        ({"RUNCVM_DISPLAY_MODE": "headless"}, None),
        ({"RUNCVM_QEMU_VNC_DISPLAY": "1"}, 5901),
        ({"VIRTAINER_VNC": "5999", "VM_GUEST_VNC": "1"}, 5999),  # two names, one meaning
        ({"VIRTAINER_VNC": "on"}, 5900),
    ],
)
def test_vnc_from_supravm_and_runcvm_names(env: dict[str, str], port: int | str | None) -> None:
    spec = from_env(env)
    if port is None:
        assert spec.vnc is None
    else:
        assert spec.vnc is not None
        assert spec.vnc.port == (None if port == "auto" else port)


def test_vnc_listens_locally_on_a_host_and_everywhere_in_a_container() -> None:
    on_host = from_env({"VM_GUEST_VNC": "1"})
    in_container = from_env({"VM_GUEST_VNC": "1"}, HostFacts(4, 8192, in_container=True))
    assert on_host.vnc is not None and on_host.vnc.listen == "127.0.0.1"
    assert in_container.vnc is not None and in_container.vnc.listen == "0.0.0.0"
    chosen = from_env({"VM_GUEST_VNC": "1", "VIRTAINER_VNC_LISTEN": "::1", "VIRTAINER_VNC_PASSWORD": "pw"})
    assert chosen.vnc is not None and (chosen.vnc.listen, chosen.vnc.password) == ("::1", "pw")
    assert "pw" not in repr(chosen)


def test_runcvm_std_vga_is_vga() -> None:
    assert from_env({"RUNCVM_QEMU_VGA": "std"}).video == "vga"


# -- SupraVM's disk layout ----------------------------------------------------------------------


def make_disk(path: Path, size: str = "16M") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.qemu_img("create", "-q", "-f", "qcow2", str(path), size)
    return path


@pytest.fixture
def supravm_root(tmp_path: Path) -> Path:
    store = tmp_path / "opt-vm" / "windows" / "win10test"
    for name in ("sys", "data0", "data1", "data3"):  # data2 missing: data3 is not attached
        make_disk(store / f"{name}.qcow2")
    return tmp_path / "opt-vm"


def test_supravm_layout_finds_sys_and_data_disks_in_order(supravm_root: Path) -> None:
    env = {
        "SUPRA_APPS": "windows", "VM_OS_SUB_VER": "windows-10", "VM_STORAGE_ID": "win10test",
        "VIRTAINER_STORAGE_ROOT": str(supravm_root), "VIRTAINER_DISKS": f"{supravm_root}/extra.qcow2,1G",
    }  # fmt: skip
    spec = from_env(env)
    store = supravm_root / "windows" / "win10test"
    assert spec.diff_path == store / "sys.qcow2"
    assert spec.storage_dir == store
    assert [disk.path for disk in spec.data_disks] == [
        store / "data0.qcow2", store / "data1.qcow2", supravm_root / "extra.qcow2"
    ]  # fmt: skip
    # SupraVM's hardware contract: its disks carry the virtio drivers and boot UEFI on q35
    assert hardware(spec) == ("windows", "q35", "uefi", "virtio", "virtio", "vga", "localtime")
    assert spec.nvram_path == store / "sys.qcow2.nvram.fd"
    assert spec.wait_for == ("running", "ip")


def test_supravm_legacy_releases_keep_legacy_bios(supravm_root: Path) -> None:
    env = {"SUPRA_APPS": "windows", "VM_OS_SUB_VER": "windows-xp", "VM_STORAGE_ID": "win10test",
           "VIRTAINER_STORAGE_ROOT": str(supravm_root)}  # fmt: skip
    assert hardware(from_env(env)) == ("windows-xp", "pc", "bios", "virtio", "virtio", "cirrus", "localtime")
    env["VIRTAINER_WINDOWS_DRIVERS"] = "none"
    assert hardware(from_env(env)) == ("windows-xp", "pc", "bios", "ide", "rtl8139", "cirrus", "localtime")
    env["VM_OS_SUB_VER"] = "windows-7"  # SupraVM runs windows-7 on q35 with legacy BIOS
    assert hardware(from_env(env)) == ("windows-7", "q35", "bios", "sata", "e1000", "vga", "localtime")


def test_supravm_linux_directory(tmp_path: Path) -> None:
    make_disk(tmp_path / "linux" / "web" / "sys.qcow2")
    spec = from_env({"SUPRA_APPS": "linux", "VM_STORAGE_ID": "web", "VIRTAINER_STORAGE_ROOT": str(tmp_path)})
    assert spec.diff_path == tmp_path / "linux" / "web" / "sys.qcow2"
    assert spec.data_disks == ()
    assert spec.firmware == "uefi" and spec.machine == "q35"


# -- standalone system disks (no base image) ------------------------------------------------------


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTAINER_CACHE_DIR", str(tmp_path / "cache"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def standalone_spec(root: Path, **extra: object) -> VmSpec:
    values = {"storage_id": "win10test", "storage_root": str(root), "profile": "windows", "accelerator": "tcg",
              "state_dir": str(root / "state"), "firmware": "bios"}  # fmt: skip
    values.update(extra)
    return resolve(**values)


def test_standalone_system_disk_is_used_as_it_is(supravm_root: Path) -> None:
    spec = standalone_spec(supravm_root)
    before = sha256(spec.diff_path)
    plan = machine.plan_up(spec, None, machine.QuietReporter())
    assert (plan.base, plan.identity, plan.diff_exists) == (None, None, True)
    assert plan.disk_formats[spec.diff_path] == "qcow2"
    machine._write_vm_files(plan, machine.QuietReporter())
    assert sha256(spec.diff_path) == before  # not recreated, not reformatted
    assert not spec.base_record_path.exists()  # no base: nothing to record
    assert "/win10test/data1.qcow2" in plan.domain_xml()


def test_a_configured_image_does_not_touch_a_standalone_disk(supravm_root: Path, tmp_path: Path) -> None:
    base = make_disk(tmp_path / "base.qcow2")
    spec = standalone_spec(supravm_root, image=str(base))
    before = sha256(spec.diff_path)
    plan = machine.plan_up(spec, None, machine.QuietReporter())
    assert plan.base is None
    machine._write_vm_files(plan, machine.QuietReporter())
    assert sha256(spec.diff_path) == before and not spec.base_record_path.exists()


def test_an_overlay_without_its_base_is_refused(supravm_root: Path, tmp_path: Path) -> None:
    base = make_disk(tmp_path / "base.qcow2")
    sys_disk = supravm_root / "windows" / "win10test" / "sys.qcow2"
    sys_disk.unlink()
    storage.qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(sys_disk))
    with pytest.raises(BaseMismatchError, match=r"is an overlay on .*base\.qcow2"):
        machine.plan_up(standalone_spec(supravm_root), None, machine.QuietReporter())


def test_no_disk_and_no_image_names_the_storage_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^invalid storage_id='win10test': a directory holding sys\.qcow2"):
        standalone_spec(tmp_path / "empty")
    env = {"VM_STORAGE_ID": "win10", "VIRTAINER_STORAGE_ROOT": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"^invalid VM_STORAGE_ID='win10': a directory holding sys\.qcow2"):
        from_env(env)
    with pytest.raises(ConfigError, match=r"^invalid image="):
        storage.require_system_disk(resolve(diff=str(tmp_path / "nothing.qcow2")))


def test_missing_sys_disk_is_made_on_a_base_image(tmp_path: Path) -> None:
    base = make_disk(tmp_path / "base.qcow2")
    spec = standalone_spec(tmp_path / "root", image=str(base))
    plan = machine.plan_up(spec, None, machine.QuietReporter())
    machine._write_vm_files(plan, machine.QuietReporter())
    assert storage.image_info(spec.diff_path)["backing-filename"] == str(base)
    assert json.loads(spec.base_record_path.read_text())["base"]["sha256"] == sha256(base)


# -- UEFI NVRAM beside the diff ---------------------------------------------------------------------


def test_nvram_is_made_once_from_the_template_then_kept(tmp_path: Path) -> None:
    template = tmp_path / "OVMF_VARS.fd"
    template.write_bytes(b"\x00" * 4096)
    host = HostFacts(2, 4096, uefi=UefiFirmware(tmp_path / "OVMF_CODE.fd", template))
    spec = resolve(host, firmware="uefi", diff=str(tmp_path / "vm" / "diff.qcow2"))
    assert storage.prepare_nvram(spec) is True
    assert spec.nvram_path.read_bytes() == template.read_bytes()
    spec.nvram_path.write_bytes(b"boot entries written by the guest")
    inode = spec.nvram_path.stat().st_ino
    assert storage.prepare_nvram(spec) is False
    assert spec.nvram_path.read_bytes() == b"boot entries written by the guest"
    assert spec.nvram_path.stat().st_ino == inode
    assert storage.prepare_nvram(resolve(host, diff=str(tmp_path / "bios.qcow2"))) is False  # bios: none


# -- how OVMF is found ------------------------------------------------------------------------------


def descriptor(directory: Path, name: str, code: Path, template: Path, features: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "interface-types": ["uefi"],
        "mapping": {"device": "flash", "executable": {"filename": str(code), "format": "raw"},
                    "nvram-template": {"filename": str(template), "format": "raw"}},
        "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
        "features": features,
    }  # fmt: skip
    (directory / name).write_text(json.dumps(data))


def test_ovmf_is_the_first_plain_uefi_descriptor(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("secure-code", "secure-vars", "code", "vars")}
    for path in files.values():
        path.write_bytes(b"fd")
    usr, etc = tmp_path / "usr", tmp_path / "etc"
    descriptor(usr, "40-secure.json", files["secure-code"], files["secure-vars"], ["secure-boot", "requires-smm"])
    descriptor(usr, "60-plain.json", files["code"], files["vars"], ["acpi-s3"])
    (usr / "10-broken.json").write_text("{not json")
    assert find_ovmf([etc, usr]) == UefiFirmware(files["code"], files["vars"])
    # a descriptor in /etc overrides /usr's of the same name (here with a template that is missing)
    descriptor(etc, "60-plain.json", files["code"], tmp_path / "missing-vars", [])
    assert find_ovmf([etc, usr]) != UefiFirmware(files["code"], files["vars"])


def test_this_host_has_ovmf_and_swtpm() -> None:
    """The project's setup installs both (scripts/setup-host.sh); the real-guest tests need them."""
    facts = HostFacts.probe()
    assert facts.uefi is not None and facts.uefi.code.is_file() and facts.uefi.vars_template.is_file()
    assert facts.swtpm


# -- cloud-init finds data disks by serial, whatever the bus ------------------------------------------


@pytest.mark.parametrize(
    ("bus", "device"),
    [("virtio", "virtio-data0"), ("scsi", "scsi-0QEMU_QEMU_HARDDISK_data0"), ("sata", "ata-QEMU_HARDDISK_data0"),
     ("ide", "ata-QEMU_HARDDISK_data0")],
)  # fmt: skip
def test_data_disk_cloud_config_names_the_disk_by_serial(tmp_path: Path, bus: str, device: str) -> None:
    spec = resolve(disks=[f"{tmp_path}/d.qcow2,/var/lib/docker,ext4,1G"], disk_bus=bus)
    config = machine.data_disk_cloud_config(spec.data_disks, spec.disk_bus)
    assert config is not None
    assert config["fs_setup"] == [
        {"device": f"/dev/disk/by-id/{device}", "filesystem": "ext4", "label": "data0", "overwrite": False}
    ]  # fmt: skip
    assert config["mounts"] == [[f"/dev/disk/by-id/{device}", "/var/lib/docker", "ext4", "defaults,nofail", "0", "2"]]
