"""The VM spec: flags, files, environment (with earlier systems' names), and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from virtainer.cli import build_parser, settings_from_args
from virtainer.errors import ConfigError
from virtainer.spec import (
    SETTINGS_BY_KEY,
    HostFacts,
    RawValue,
    default_user_for,
    merge_settings,
    resolve_spec,
    settings_from_env,
    settings_from_file,
    settings_from_mapping,
)
from virtainer.units import parse_size_mib

HOST = HostFacts(cpus=8, memory_mib=16384)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnlyForTestsOnlyForTestsOnlyForTestsOnly test@host"


def resolve(**values: object):
    return resolve_spec({key: RawValue(value, key) for key, value in values.items()}, HOST)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "base.qcow2"
    path.write_bytes(b"QFI\xfb")
    return path


# -- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "mib"),
    [("512M", "M", 512), ("8G", "M", 8192), ("1.5G", "M", 1536), ("1024", "M", 1024),
     ("20", "G", 20480), ("20GiB", "M", 20480), ("2gb", "M", 2048), ("1T", "G", 1 << 20),
     ("4096K", "M", 4)],
)  # fmt: skip
def test_sizes_accept_the_usual_suffixes(text: str, unit: str, mib: int) -> None:
    assert parse_size_mib(text, default_unit=unit) == mib


# -- defaults -----------------------------------------------------------------------------------


def test_defaults_need_no_thought() -> None:
    spec = resolve()
    assert spec.name == "vm"
    assert spec.vcpus == 4  # host has 8: at most 4 by default
    assert spec.memory_mib == 4096  # a quarter of the host, at most 4 GiB
    assert spec.accelerator == "auto"
    assert spec.password_policy == "auto"
    assert spec.diff_path == Path("/var/lib/virtainer/vm/diff.qcow2")
    assert spec.wait_for == ("running", "ip", "agent", "cloud-init", "ssh")


def test_small_host_gets_small_defaults() -> None:
    spec = resolve_spec({}, HostFacts(cpus=1, memory_mib=1024))
    assert (spec.vcpus, spec.memory_mib) == (1, 512)


# -- environment, with aliases ------------------------------------------------------------------


def test_virtainers_environment_names(image: Path, tmp_path: Path) -> None:
    env = {
        "RAM": "2048", "CPU": "2", "VM_NAME": "fedora29", "OS_VARIANT": "fedora29",
        "IMAGE": str(image), "IMAGE_DIR": str(tmp_path / "mounted"), "DISK_SIZE": "20",
        "CLOUD_INIT_DISK": str(tmp_path / "cloud_init.iso"),
    }  # fmt: skip
    spec = resolve_spec(settings_from_env(env), HOST)
    assert spec.memory_mib == 2048
    assert spec.vcpus == 2
    assert spec.name == "fedora29"
    assert spec.default_user == "fedora"
    assert spec.image.path == image
    assert spec.diff_path == tmp_path / "mounted" / "local_image.qcow2"
    assert spec.disk_size_mib == 20 * 1024
    assert spec.generated_seed_path == tmp_path / "cloud_init.iso"


def test_supravm_environment_names() -> None:
    env = {"VM_CPU_CORES": "3", "VM_RAM": "8G", "VM_MAC": "00:00:00:01:02:03"}
    spec = resolve_spec(settings_from_env(env), HOST)
    assert (spec.vcpus, spec.memory_mib, spec.mac_address) == (3, 8192, "00:00:00:01:02:03")


def test_one_setting_under_two_names_must_agree() -> None:
    """RAM and VIRTAINER_MEMORY are one setting: two values are refused naming both, never one
    silently preferred; the same value under two names (even spelt differently) is fine."""
    with pytest.raises(ConfigError) as refused:
        resolve_spec(settings_from_env({"VIRTAINER_MEMORY": "3G", "RAM": "1024"}), HOST)
    assert "RAM='1024'" in str(refused.value) and "VIRTAINER_MEMORY='3G'" in str(refused.value)
    assert resolve_spec(settings_from_env({"VIRTAINER_MEMORY": "1G", "RAM": "1024"}), HOST).memory_mib == 1024
    with pytest.raises(ConfigError, match=r"VM_CPU_CORES='3'.*CPU='2'|CPU='2'.*VM_CPU_CORES='3'"):
        resolve_spec(settings_from_env({"CPU": "2", "VM_CPU_CORES": "3"}), HOST)


def test_a_file_key_spelt_two_ways_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"disk-size.*disk_size|disk_size.*disk-size"):
        resolve_spec(settings_from_mapping({"disk_size": "20G", "disk-size": "30G"}, "vm.yaml"), HOST)


def test_name_argument_and_flag_must_agree() -> None:
    args = build_parser().parse_args(["render", "web", "--name", "db"])
    with pytest.raises(ConfigError, match="NAME='web'"):
        resolve_spec(settings_from_args(args), HOST)
    args = build_parser().parse_args(["render", "web", "--name", "web"])
    assert resolve_spec(settings_from_args(args), HOST).name == "web"


def test_supravm_release_refines_supra_apps() -> None:
    """SUPRA_APPS=windows with VM_OS_SUB_VER=windows-7 is one profile, not two that disagree."""
    spec = resolve_spec(settings_from_env({"SUPRA_APPS": "windows", "VM_OS_SUB_VER": "windows-7"}), HOST)
    assert spec.profile == "windows-7"
    with pytest.raises(ConfigError, match=r"SUPRA_APPS='windows'.*VIRTAINER_PROFILE='linux'"):
        resolve_spec(settings_from_env({"VIRTAINER_PROFILE": "linux", "SUPRA_APPS": "windows"}), HOST)


def test_runcvm_disks_alias(tmp_path: Path) -> None:
    env = {"RUNCVM_DISKS": f"{tmp_path}/docker,/var/lib/docker,ext4,1G;{tmp_path}/plain.qcow2,5G"}
    spec = resolve_spec(settings_from_env(env), HOST)
    first, second = spec.data_disks
    assert (first.mount, first.filesystem, first.size_mib) == ("/var/lib/docker", "ext4", 1024)
    assert (second.path, second.size_mib, second.mount) == (tmp_path / "plain.qcow2", 5120, None)


# -- files and flags ----------------------------------------------------------------------------


def test_yaml_and_json_files(tmp_path: Path, image: Path) -> None:
    yaml_file = tmp_path / "vm.yaml"
    yaml_file.write_text(f"name: web\nmemory: 2G\nvcpus: 2\nimage: {image}\nssh-keys: ['{KEY}']\n")
    spec = resolve_spec(settings_from_file(yaml_file), HOST)
    assert (spec.name, spec.memory_mib, spec.vcpus, spec.ssh_authorized_keys) == ("web", 2048, 2, (KEY,))
    json_file = tmp_path / "vm.json"
    json_file.write_text(json.dumps({"name": "db", "memory": 1024, "accelerator": "tcg"}))
    spec = resolve_spec(settings_from_file(json_file), HOST)
    assert (spec.name, spec.memory_mib, spec.accelerator) == ("db", 1024, "tcg")


def test_flags_win_over_environment_over_file(tmp_path: Path) -> None:
    config = tmp_path / "vm.yaml"
    config.write_text("name: from-file\nmemory: 1G\nvcpus: 1\n")
    args = build_parser().parse_args(["up", "--memory", "3G", "-f", str(config)])
    merged = merge_settings(
        settings_from_file(config), settings_from_env({"VIRTAINER_VCPUS": "2", "RAM": "2048"}),
        settings_from_args(args),
    )  # fmt: skip
    spec = resolve_spec(merged, HOST)
    assert (spec.name, spec.vcpus, spec.memory_mib) == ("from-file", 2, 3072)


def test_ssh_keys_from_files_and_literals(tmp_path: Path) -> None:
    key_file = tmp_path / "id.pub"
    other = KEY.replace("test@host", "other@host")
    key_file.write_text(f"# my keys\n{other}\n\n")
    spec = resolve(ssh_keys=[KEY, str(key_file), KEY])
    assert spec.ssh_authorized_keys == (KEY, other)


def test_os_variant_sets_default_user() -> None:
    assert default_user_for("ubuntu24.04") == "ubuntu"
    assert default_user_for("centos7") == "centos"
    assert default_user_for("centos-stream9") == "cloud-user"
    assert default_user_for("rhel7") == "cloud-user"
    assert default_user_for("generic") is None


# -- bad input: every one names the setting, the value and what is accepted ----------------------

BAD_INPUTS = [
    ("name", "", "name"),
    ("name", "has space", "letters, digits"),
    ("name", "-leading", "starting with a letter"),
    ("name", "x" * 64, "1-63"),
    ("vcpus", "0", "from 1 to 256"),
    ("vcpus", "two", "whole number"),
    ("vcpus", "999", "from 1 to 256"),
    ("memory", "lots", "512M"),
    ("memory", "12Q", "512M"),
    ("memory", "10M", "from 64M"),
    ("memory", "-1G", "512M"),
    ("disk_size", "1.3M", "512M"),
    ("disk_size", "0", "512M"),
    ("image", "/no/such/image.qcow2", "existing file"),
    ("image", "/tmp", "regular file"),
    ("image_url", "ftp://example.org/x.img", "http://"),
    ("image_sha256", "abc", "64 hexadecimal"),
    ("os_variant", "windows95", "debian12"),
    ("accelerator", "hvf", "auto, kvm, tcg"),
    ("ssh_keys", "/no/such/key.pub", "readable .pub file"),
    ("ssh_keys", "not-a-key", "readable .pub file"),
    ("user_data", "/no/such/user-data", "existing file"),
    ("meta_data", "/no/such/meta-data", "existing file"),
    ("network_config", "/no/such/network-config", "existing file"),
    ("seed_iso", "/no/such/seed.iso", "existing file"),
    ("password_policy", "sometimes", "auto, random, fixed, none"),
    ("password", "short", "8 to 128"),
    ("mac", "01:02:03:04:05:06", "unicast"),
    ("mac", "52:54:00:zz:00:01", "six hex pairs"),
    ("mac", "52:54:00", "six hex pairs"),
    ("disks", "/d.qcow2,/mnt,ntfs,1G", "ext4"),
    ("disks", "/d.qcow2,mnt,ext4,1G", "absolute path"),
    ("disks", "/d.qcow2,huge", "512M"),
    ("disks", ",", "PATH"),
    ("network", "wifi", "default, network:NAME"),
    ("network", "bridge:", "default, network:NAME"),
    ("kernel", "/no/such/vmlinuz", "existing file"),
    ("machine", "virt", "pc, q35"),
    ("wait_for", "running,coffee", "cloud-init"),
    ("boot_timeout", "-5", "positive number"),
    ("stop_timeout", "soon", "positive number"),
    ("hostname", "bad_host!", "RFC 1123"),
    ("user", "Root User", "Unix user name"),
    ("cmdline", "a\nb", "one line"),
    # guest hardware, display and SupraVM's layout (issue 5)
    ("profile", "windows-95", "linux, windows, windows-7"),
    ("profile", "macos", "windows-xp"),
    ("windows_drivers", "virtio", "only with a windows profile"),
    ("firmware", "efi", "bios, uefi"),
    ("firmware", "uefi", "OVMF, which uefi needs, is not installed"),  # this host has no OVMF
    ("tpm", "hardware", "none, emulated"),
    ("tpm", "emulated", "swtpm is not installed"),  # nor swtpm
    ("clock", "gmt", "utc, localtime"),
    ("disk_bus", "nvme", "virtio, scsi, sata, ide"),
    ("disk_cache", "fast", "writeback, writethrough, unsafe, directsync"),
    ("video", "qxl", "virtio, vga, cirrus, bochs, none"),
    ("vnc", "5899", "a TCP port from 5900 to 65535"),
    ("vnc", "maybe", "off, on (port 5900), auto"),
    ("vnc_listen", "0.0.0.0", "only together with vnc"),
    ("vnc_password", "secret", "only together with vnc"),
    ("storage_id", "../etc", "a directory name"),
    ("storage_root", "/srv/vms", "only together with storage_id"),
]

# Values refused only in the company of other settings: (key, value, accepted, the other settings).
BAD_COMBINED_INPUTS = [
    ("vnc_listen", "localhost", "an IPv4 or IPv6 address", {"vnc": "on"}),
    ("vnc_password", "too-long-pw", "1 to 8 printable ASCII", {"vnc": "5999"}),
    ("vnc_password", "pw\nx", "1 to 8 printable ASCII", {"vnc": "5999"}),
    ("video", "none", "a display adapter for VNC", {"vnc": "auto"}),
    ("windows_drivers", "sometimes", "virtio, none", {"profile": "windows"}),
    ("firmware", "uefi", "windows-xp boots with legacy BIOS only", {"profile": "windows-xp"}),
    ("disk_bus", "ide", "IDE disks only with machine pc", {"machine": "q35"}),
    # without virtio drivers the seed cdrom takes hdc; with them the seed is a virtio disk
    ("disk_bus", "ide", "at most 3 IDE disks", {"disks": ["/d0.qcow2", "/d1.qcow2", "/d2.qcow2"],
                                                "profile": "windows-7"}),
    ("disk_bus", "ide", "at most 4 IDE disks", {"disks": [f"/d{n}.qcow2" for n in range(4)]}),
    ("disks", [f"/d{n}.qcow2" for n in range(25)], "at most 24 data disks on the virtio bus", {}),
    ("disks", [f"/d{n}.qcow2" for n in range(26)], "at most 25 data disks on the sata bus", {"disk_bus": "sata"}),
    ("disks", [f"/d{n}.qcow2" for n in range(25)], "at most 24 data disks on the sata bus",
     {"profile": "windows", "machine": "q35"}),
    ("diff", "/vms/x.qcow2", "either a diff path or storage_id", {"storage_id": "win10"}),
    ("image_dir", "/mounted", "either a diff path or storage_id", {"storage_id": "win10"}),
]


@pytest.mark.parametrize(("key", "value", "accepted"), BAD_INPUTS, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD_INPUTS])
def test_bad_input_names_setting_value_and_accepted(key: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(**{key: [value] if key in ("ssh_keys", "disks") else value})
    assert_names_setting(str(caught.value), key, value, accepted)


def assert_names_setting(message: str, key: str, value: str, accepted: str) -> None:
    assert message.startswith(f"invalid {key}=")
    assert accepted in message
    assert "\n" not in message
    if not SETTINGS_BY_KEY[key].secret:
        assert repr(value)[1:-1] in message
    else:
        assert value not in message  # secrets are never echoed


@pytest.mark.parametrize(
    ("key", "value", "accepted", "others"), BAD_COMBINED_INPUTS,
    ids=[f"{k}={v!r}"[:40] for k, v, _, _ in BAD_COMBINED_INPUTS],
)  # fmt: skip
def test_bad_input_in_company_names_setting(key: str, value: str, accepted: str, others: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(**others, **{key: value})
    assert_names_setting(str(caught.value), key, value, accepted)


def test_at_least_25_distinct_bad_inputs() -> None:
    assert len({key for key, _, _ in BAD_INPUTS}) >= 25


def test_combination_errors(tmp_path: Path, image: Path) -> None:
    with pytest.raises(ConfigError, match="fixed needs a password"):
        resolve(password_policy="fixed")
    with pytest.raises(ConfigError, match="not both"):
        resolve(image=str(image), image_url="https://example.org/x.qcow2")
    with pytest.raises(ConfigError, match="together with a kernel"):
        resolve(initrd=str(image))
    with pytest.raises(ConfigError, match="the same file as diff"):
        resolve(image=str(image), diff=str(image))


def test_env_error_names_the_variable_the_user_set() -> None:
    with pytest.raises(ConfigError, match=r"^invalid RAM='lots'"):
        resolve_spec(settings_from_env({"RAM": "lots"}), HOST)
    with pytest.raises(ConfigError, match=r"^invalid VM_CPU_CORES='0'"):
        resolve_spec(settings_from_env({"VM_CPU_CORES": "0"}), HOST)


def test_file_errors(tmp_path: Path) -> None:
    typo = tmp_path / "vm.yaml"
    typo.write_text("memroy: 1G\n")
    with pytest.raises(ConfigError, match=r"memroy \(vm.yaml\).*unknown setting; one of: name"):
        settings_from_file(typo)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="valid JSON or YAML"):
        settings_from_file(broken)
    with pytest.raises(ConfigError, match="a mapping of settings"):
        settings_from_mapping(["not", "a", "mapping"], "api")


def test_cli_bad_input_exits_2_with_one_line_and_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    command = [sys.executable, "-m", "virtainer.cli", "up", "--memory", "lots", "--state-dir", str(state)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "invalid --memory='lots'" in done.stderr
    assert not state.exists()


# -- network control: ports, guest forwards, isolation, LAN ----------------------------------------

IN_CONTAINER = HostFacts(cpus=8, memory_mib=16384, in_container=True)


def resolve_env(environ: dict[str, str], host: HostFacts = IN_CONTAINER):
    return resolve_spec(settings_from_env(environ), host)


def test_port_rules_canonical_form() -> None:
    net = resolve_env({"VIRTAINER_PORTS": "tcp:8080:80 udp:5353:53, tcp:9000-9010 7000-7001:8000-8001"}).network
    assert [rule.describe() for rule in net.ports] == [
        "tcp:8080->80", "udp:5353->53", "tcp:9000-9010->9000-9010", "tcp:7000-7001->8000-8001"
    ]  # fmt: skip
    assert net.ports[3].pairs() == [(7000, 8000), (7001, 8001)]
    assert net.incoming_port(80) == 8080 and net.incoming_port(53, "udp") == 5353 and net.incoming_port(22) is None
    assert resolve_env({"VIRTAINER_PORTS": "none"}).network.ports == ()  # nothing reaches the guest
    assert resolve_env({}).network.ports is None  # every port (the container's default)


def test_supravm_network_names_are_translated() -> None:
    spec = resolve_env({
        "VM_TCP_PORTS": '("0.0.0.0:3389:3389" "192.168.199.9:22:2222")',
        "VM_GUEST_TCP_FWDS": "('10.0.2.100:80:172.17.0.1:8080')",
        "VM_GUEST_RESTRICT": "1",
        "VM_GUEST_LAN": "192.168.199.0/24",
        "VM_MAC": "00:00:00:01:02:03",
    })  # fmt: skip
    net = spec.network
    assert [rule.describe() for rule in net.ports] == ["tcp:3389->3389", "tcp:2222->192.168.199.9:22"]
    assert [forward.describe() for forward in net.forwards] == ["tcp:10.0.2.100:80->172.17.0.1:8080"]
    assert net.restrict and str(net.lan) == "192.168.199.0/24"
    assert (str(net.gateway), str(net.guest_ip)) == ("192.168.199.1", "192.168.199.2")
    assert spec.mac_address == "00:00:00:01:02:03"
    assert settings_from_env({"VM_TCP_PORTS": "0.0.0.0:22:2222"})["ports"].value == "tcp:2222:22"  # no parens


@pytest.mark.parametrize(
    ("environ", "message"),
    [({"VIRTAINER_PORTS": "tcp:80:81-82"}, "same length"),
     ({"VIRTAINER_PORTS": "tcp:0"}, "from 1 to 65535"),
     ({"VIRTAINER_PORTS": "tcp:90-80"}, "FIRST <= LAST"),
     ({"VIRTAINER_PORTS": "icmp:80"}, "VIRTAINER_PORTS='icmp:80'"),
     ({"VIRTAINER_PORTS": "tcp:2222:0.0.0.0:22"}, "an address in the guest LAN"),
     ({"VIRTAINER_PORTS": "udp:53 udp:50-60"}, "each incoming udp port in one rule only"),
     ({"VIRTAINER_PORTS": " "}, "VIRTAINER_PORTS"),
     ({"VM_TCP_PORTS": '("0.0.0.0:3389:3389"'}, "VM_TCP_PORTS="),
     ({"VM_TCP_PORTS": '("0.0.0.0:x:3389")'}, "TARGET-IP:TARGET-PORT:INCOMING-PORT"),
     ({"VM_TCP_PORTS": '("nowhere:22:22")'}, "VM_TCP_PORTS="),
     ({"VIRTAINER_GUEST_FORWARDS": "tcp:10.0.0.1:80:172.17.0.1"}, "REAL-IP:REAL-PORT"),
     ({"VIRTAINER_GUEST_FORWARDS": "tcp:10.0.0.1:80:0.0.0.0:80"}, "not loopback or 0.0.0.0"),
     ({"VIRTAINER_GUEST_FORWARDS": "10.0.0.1:80:1.1.1.1:80 10.0.0.1:80:1.1.1.2:80"}, "each TARGET-IP:TARGET-PORT once"),
     ({"VM_GUEST_TCP_FWDS": '("10.0.0.1:80:localhost:80")'}, "REAL-IP must be an IPv4 address"),
     ({"VM_GUEST_RESTRICT": "sometimes"}, "VM_GUEST_RESTRICT='sometimes'"),
     ({"VM_GUEST_LAN": "192.168.1.0/30"}, "/8 to /29"),
     ({"VM_GUEST_LAN": "192.168.1.7/24"}, "an IPv4 network address"),
     ({"VM_GUEST_LAN": "192.168.199.0/24", "VIRTAINER_PORTS": "tcp:22:10.0.0.5:22"}, "inside the guest LAN"),
     ({"VIRTAINER_NETWORK": "none", "VM_GUEST_LAN": "10.1.0.0/24"}, "VM_GUEST_LAN='10.1.0.0/24': set only with"),
     ({"VIRTAINER_NETWORK": "bridge:br0", "VIRTAINER_PORTS": "tcp:22"}, "set only with user-mode networking"),
     ({"VIRTAINER_NETWORK": "user", "VM_GUEST_TCP_FWDS": "1.2.3.4:80:1.1.1.1:80"}, "user-mode networking cannot"),
     ({"VIRTAINER_NETWORK": "user", "VIRTAINER_PORTS": "tcp:1000-3000"}, "at most 1024 ports with user-mode")],
)  # fmt: skip
def test_bad_network_control_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_env(environ)
    text = str(raised.value)
    assert message in text and "\n" not in text
    assert any(name in text for name in environ), text


def test_network_control_outside_the_container_needs_user_mode() -> None:
    with pytest.raises(ConfigError, match="set only with user-mode networking"):
        resolve_env({"VIRTAINER_PORTS": "tcp:2222:22"}, HOST)  # a host's libvirt network: not ours
    spec = resolve_env({"VIRTAINER_NETWORK": "user", "VIRTAINER_PORTS": "tcp:2222:22"}, HOST)
    assert spec.network.mode == "user" and spec.network.incoming_port(22) == 2222
    assert "ssh" in spec.wait_for  # the forwarded port is probed
    no_ssh = resolve_env({"VIRTAINER_NETWORK": "user", "VIRTAINER_PORTS": "tcp:8080:80"}, HOST)
    assert "ssh" not in no_ssh.wait_for  # it could never be reached
