"""The OCI runtime's pure logic: bundle rewriting, the guest's configuration, runc's command line."""

from __future__ import annotations

import functools
import gzip
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from virtainer.accel import AcceleratorChoice
from virtainer.domain import validate_domain_xml
from virtainer.errors import ConfigError
from virtainer.runtime import bundle, cli, disks, entry, install, netsetup, processes
from virtainer.runtime.plan import FIRMWARE, Disk, LaunchPlan, Nic, Process
from virtainer.runtime.vm import (
    AttachedDisk,
    PortRelay,
    VmFiles,
    guest_config,
    newc_archive,
    render_vm_xml,
    write_initrd,
)

MIB = 1024 * 1024


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "merged"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "busybox").write_text("#!")
    os.chmod(root / "usr" / "bin" / "busybox", 0o755)
    (root / "bin").symlink_to("usr/bin")  # merged /usr, relative
    (root / "usr" / "bin" / "sh").symlink_to("/usr/bin/busybox")  # absolute: resolved inside root
    (root / "etc").mkdir()
    return root


def docker_config(image_root: Path, **process: Any) -> dict[str, Any]:
    """The shape dockerd 20.10 writes (trimmed)."""
    return {
        "ociVersion": "1.0.2",
        "root": {"path": str(image_root)},
        "hostname": "abc123",
        "process": {
            "args": ["/sbin/docker-init", "--", "sh", "-c", "echo hi"],
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin", "RUNCVM_KERNEL_DEBUG=0"],
            "cwd": "/work",
            "user": {"uid": 1000, "gid": 1001, "additionalGids": [1001, 27]},
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"]},
            "terminal": False,
            "apparmorProfile": "docker-default",
            **process,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/shm", "type": "bind", "source": "/var/lib/docker/x/shm"},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
            {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/docker/x/hosts", "options": ["rbind"]},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
            {"destination": "/sbin/docker-init", "type": "bind", "source": "/usr/bin/docker-init"},
        ],
        "linux": {
            "resources": {"memory": {"limit": 1024 * MIB}, "cpu": {"quota": 150000, "period": 100000}, "devices": []},
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"},
        },
    }


def paths(tmp_path: Path) -> bundle.HostPaths:
    return bundle.HostPaths(tree=tmp_path / "tree", code=tmp_path / "code", guest=tmp_path / "guest",
                            run=tmp_path / "run", shared=tmp_path / "shared")  # fmt: skip


def test_rewrite_runs_the_launcher_on_the_runtime_tree(tmp_path: Path, image_root: Path) -> None:
    new, plan = bundle.rewrite(docker_config(image_root), tmp_path, paths(tmp_path), "abc123def456")
    assert new["root"] == {"path": str(tmp_path / "tree"), "readonly": True}
    assert new["process"]["args"][:2] == ["/usr/bin/tini", "-s"]
    assert new["process"]["user"] == {"uid": 0, "gid": 0}
    assert "apparmorProfile" not in new["process"] and "seccomp" not in new["linux"]
    caps = new["process"]["capabilities"]
    assert caps["effective"] == caps["bounding"] and {"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_KILL"} <= set(
        caps["bounding"]
    )
    assert new["annotations"][bundle.MARK] == "vm"
    # the original process, --init's docker-init dropped: the guest init reaps
    assert plan.process.args == ["sh", "-c", "echo hi"]
    assert (plan.process.uid, plan.process.gid, plan.process.groups) == (1000, 1001, [1001, 27])
    guest_mib = 1024 - bundle.OVERHEAD_MIB
    assert (plan.process.cwd, plan.hostname, plan.memory_mib, plan.vcpus) == ("/work", "abc123", guest_mib, 2)


def test_rewrite_relocates_the_image_mounts_under_the_vm_rootfs(tmp_path: Path, image_root: Path) -> None:
    new, _plan = bundle.rewrite(docker_config(image_root), tmp_path, paths(tmp_path), "abc")
    destinations = [mount["destination"] for mount in new["mounts"]]
    assert destinations[:4] == ["/proc", "/dev", "/dev/shm", "/sys/fs/cgroup"]  # the launcher's own
    rootfs = destinations.index("/vm/rootfs")
    for moved in ("/vm/rootfs/etc/hosts", "/vm/rootfs/data", "/vm/rootfs/sbin/docker-init"):
        assert destinations.index(moved) > rootfs  # mounted on top of the image's root, in order
    data = next(mount for mount in new["mounts"] if mount["destination"] == "/vm/rootfs/data")
    assert data["options"] == ["rbind", "ro"]  # read-only stays read-only
    assert new["mounts"][rootfs]["source"] == str(image_root)


def test_rewrite_twice_is_refused(tmp_path: Path, image_root: Path) -> None:
    new, _plan = bundle.rewrite(docker_config(image_root), tmp_path, paths(tmp_path), "abc")
    with pytest.raises(bundle.BundleError, match="already rewritten"):
        bundle.rewrite(new, tmp_path, paths(tmp_path), "abc")


@pytest.mark.parametrize("command", ["sh", "/bin/sh", "busybox", "/usr/bin/../bin/sh"])
def test_commands_the_image_has_are_accepted(tmp_path: Path, image_root: Path, command: str) -> None:
    config = docker_config(image_root, args=[command])
    assert bundle.rewrite(config, tmp_path, paths(tmp_path), "abc")[1].process.args == [command]


def test_a_command_the_image_lacks_is_refused_in_runcs_words(tmp_path: Path, image_root: Path) -> None:
    with pytest.raises(bundle.BundleError, match=r'exec: "nginx": executable file not found in \$PATH'):
        bundle.rewrite(docker_config(image_root, args=["nginx"]), tmp_path, paths(tmp_path), "abc")
    with pytest.raises(bundle.BundleError, match="no command"):
        bundle.rewrite(docker_config(image_root, args=[]), tmp_path, paths(tmp_path), "abc")


def test_symlinks_resolve_inside_the_image_root(tmp_path: Path, image_root: Path) -> None:
    (image_root / "escape").symlink_to("/../../../etc/passwd")
    assert bundle.resolve_in_root(image_root, "/escape") is None  # /etc/passwd of the image: absent
    assert bundle.resolve_in_root(image_root, "/bin/sh") == image_root / "usr/bin/busybox"
    (image_root / "loop").symlink_to("loop")
    assert bundle.resolve_in_root(image_root, "/loop") is None


def test_memory_and_cpus() -> None:
    def config(memory: int | None = None, quota: int | None = None) -> dict[str, Any]:
        return {"linux": {"resources": {"memory": {"limit": memory}, "cpu": {"quota": quota, "period": 100000}}}}

    assert bundle.guest_memory_mib(config()) == bundle.DEFAULT_MEMORY_MIB
    assert bundle.guest_memory_mib(config(2048 * MIB)) == 2048 - bundle.OVERHEAD_MIB
    with pytest.raises(ConfigError, match=r"invalid --memory='100m': at least 192m"):
        bundle.guest_memory_mib(config(100 * MIB))
    assert (bundle.guest_vcpus(config()), bundle.guest_vcpus(config(quota=250000))) == (1, 3)


def test_settings_are_validated(tmp_path: Path, image_root: Path) -> None:
    def with_env(*env: str) -> LaunchPlan:
        return bundle.rewrite(docker_config(image_root, env=list(env)), tmp_path, paths(tmp_path), "abc")[1]

    assert with_env("VIRTAINER_ACCEL=TCG", "RUNCVM_KERNEL_DEBUG=1").accelerator == "tcg"
    assert with_env("RUNCVM_KERNEL_APPEND=foo=1").kernel_append == "foo=1"
    with pytest.raises(ConfigError, match="VIRTAINER_ACCEL='xen': one of auto, kvm, tcg"):
        with_env("VIRTAINER_ACCEL=xen")
    with pytest.raises(ConfigError, match="RUNCVM_DISPLAY_MODE='x11': headless, serial or vnc"):
        with_env("RUNCVM_DISPLAY_MODE=x11")
    assert with_env("RUNCVM_KERNEL_DEBUG=").accelerator == "auto"  # set but empty: off
    with pytest.raises(ConfigError, match="RUNCVM_KERNEL_DEBUG='maybe': 1/true/yes/on or 0/false/no/off"):
        with_env("RUNCVM_KERNEL_DEBUG=maybe")


def plan(**changes: Any) -> LaunchPlan:
    process = Process(args=["sh", "-c", "echo hi"], env=["A=1"], cwd="/w", uid=5, gid=6, groups=[7])
    return LaunchPlan(**{"container_id": "c0ffee" * 10, "process": process, "hostname": "h", "memory_mib": 256,
                         "vcpus": 2, "accelerator": "auto", **changes})  # fmt: skip


def test_plan_round_trips_through_json() -> None:
    assert LaunchPlan.from_json(plan(debug=True).to_json()) == plan(debug=True)


def test_guest_config_is_nul_separated_pairs() -> None:
    nic = Nic(mac="02:42:ac:11:00:02", tap="tap0", address="172.17.0.2", prefix=16, gateway="172.17.0.1")
    words = guest_config(plan(), with_stdin=True, nics=[nic]).split(b"\0")[:-1]
    pairs = list(zip(words[::2], words[1::2], strict=True))
    assert pairs[:4] == [(b"arg", b"sh"), (b"arg", b"-c"), (b"arg", b"echo hi"), (b"env", b"A=1")]
    assert (b"uid", b"5") in pairs and (b"group", b"7") in pairs and (b"stdin", b"1") in pairs
    assert (b"net-addr", b"172.17.0.2") in pairs and (b"net-prefix", b"16") in pairs


def test_initrd_is_the_base_plus_a_newc_archive(tmp_path: Path) -> None:
    base = tmp_path / "base.gz"
    base.write_bytes(gzip.compress(b"BASE"))
    write_initrd(base, b"key\0value\0", tmp_path / "initrd")
    data = (tmp_path / "initrd").read_bytes()
    assert data.startswith(base.read_bytes())
    archive = gzip.decompress(data[len(base.read_bytes()) :])
    assert archive == newc_archive({"virtainer/config": b"key\0value\0"})
    assert archive.startswith(b"070701") and b"virtainer/config\0" in archive and b"TRAILER!!!" in archive
    assert len(archive) % 512 == 0


def test_domain_xml_is_valid_with_virtiofs_on_memfd() -> None:
    files = VmFiles(
        Path("/g/vmlinuz"), Path("/run/v/initrd"), Path("/run/v/console.log"), Path("/run/v"), Path("/vm/rootfs")
    )
    nic = Nic(mac="02:42:ac:11:00:02", tap="vt-tap0", address="172.17.0.2", prefix=16, gateway=None, mtu=1500)
    for accelerator in (AcceleratorChoice("tcg", "test"), AcceleratorChoice("kvm", "test")):
        xml = render_vm_xml(plan(), files, accelerator, [nic])
        root = validate_domain_xml(xml)
        assert root.get("type") == accelerator.domain_type
        assert root.find("memoryBacking/source").get("type") == "memfd"
        assert root.find("devices/filesystem/driver").get("type") == "virtiofs"
        names = [target.get("name") for target in root.iterfind("devices/channel/target")]
        assert names == ["virtainer.stdin", "virtainer.stdout", "virtainer.stderr", "virtainer.control"]
        assert (root.find("cpu") is not None) == (accelerator.kind == "kvm")
        # the fast boot: q35, qboot, no NIC option ROM; TCG's translation cache bounded
        assert root.find("os/type").get("machine") == "q35"
        assert root.find("os/loader").text == FIRMWARE
        assert root.find("devices/interface/rom").get("enabled") == "no"
        assert (root.find("features/tcg/tb-cache") is not None) == (accelerator.kind == "tcg")
    with_display = validate_domain_xml(render_vm_xml(plan(video="vga", vnc_port=5901), files, accelerator, [nic]))
    assert with_display.find("os/loader") is None  # SeaBIOS: it runs the VGA BIOS qboot lacks


def test_runc_command_line_is_split_and_kept() -> None:
    argv = ["--root", "/run/r", "--log", "/l.json", "--log-format", "json", "--systemd-cgroup",
            "create", "--bundle", "/b", "--pid-file", "/p", "ID"]  # fmt: skip
    parsed = cli.parse(argv)
    assert (parsed.verb, parsed.global_value("--log"), parsed.arg_value("--bundle", "-b")) == (
        "create",
        "/l.json",
        "/b",
    )
    assert parsed.argv() == argv and cli.container_id(parsed) == "ID"
    assert cli.parse(["--log=/x", "state", "ID"]).global_value("--log") == "/x"


def test_the_verb_is_found_past_runcs_global_flags() -> None:
    assert entry.verb(["--root", "/r", "--log=/l", "--systemd-cgroup", "state", "ID"]) == "state"
    assert entry.verb(["--log", "create", "kill"]) == "kill"  # --log's value is not the verb
    assert entry.verb(["--debug"]) == entry.verb([]) == entry.verb(["--root"]) == ""


def test_the_registered_script_hands_runcs_own_verbs_to_runc(tmp_path: Path) -> None:
    """Straight to runc (the fast path); create goes through virtainer's cli, with site-packages."""
    script = tmp_path / "virtainer-runtime"
    script.write_text(entry.script(sys.executable))
    script.chmod(0o755)
    runc = tmp_path / "runc"
    runc.write_text('#!/bin/sh\necho "runc $*"\n')
    runc.chmod(0o755)
    env = {**os.environ, "VIRTAINER_RUNC": str(runc)}
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert run([str(script), "--root", "/r", "delete", "--force", "ID"]).stdout == "runc --root /r delete --force ID\n"
    created = run([str(script), "--root", "/r", "create", "--bundle", str(tmp_path / "none"), "ID"])
    assert created.returncode == 1 and "virtainer: cannot read" in created.stderr and not created.stdout


def test_daemon_json_keeps_every_other_key() -> None:
    old = {"log-level": "warn", "runtimes": {"other": {"path": "/o"}}}
    new = install.with_runtime(old, "virtainer", "/bin/vr")
    assert new == {"log-level": "warn", "runtimes": {"other": {"path": "/o"}, "virtainer": {"path": "/bin/vr"}}}
    assert install.without_runtime(new, "virtainer") == old
    assert install.without_runtime({"runtimes": {"virtainer": {}}}, "virtainer") == {"runtimes": {}}
    assert json.loads(json.dumps(old)) == old  # the input is not modified


def test_the_network_is_taken_over_only_in_a_namespace_of_its_own(tmp_path: Path, image_root: Path) -> None:
    def network(namespaces: list[dict[str, str]]) -> bool:
        config = docker_config(image_root)
        config["linux"]["namespaces"] = namespaces
        return bundle.rewrite(config, tmp_path, paths(tmp_path), "abc")[1].network

    assert network([{"type": "pid"}, {"type": "network"}])
    assert not network([{"type": "pid"}])  # --network host
    assert not network([{"type": "network", "path": "/proc/42/ns/net"}])  # --network container:X


def test_exec_process_becomes_the_exec_client() -> None:
    original = {"args": ["sh", "-c", "id"], "env": ["A=1"], "cwd": "/tmp", "user": {"uid": 7, "gid": 8},
                "terminal": True, "capabilities": {"bounding": ["CAP_KILL"]}}  # fmt: skip
    new = processes.exec_process(original)
    assert new["args"] == processes.EXEC_CLIENT and new["user"] == {"uid": 0, "gid": 0} and new["terminal"]
    spec = json.loads(next(e for e in new["env"] if e.startswith("VIRTAINER_EXEC=")).split("=", 1)[1])
    assert Process(**spec) == Process(args=["sh", "-c", "id"], env=["A=1"], cwd="/tmp", uid=7, gid=8, terminal=True)
    with pytest.raises(bundle.BundleError):
        processes.exec_process({"args": []})


def test_guest_config_carries_the_terminals_newline_mapping_and_the_dns_proxy() -> None:
    words = guest_config(plan(), with_stdin=False, nics=[], onlcr=False, dns_proxy=True).split(b"\0")[:-1]
    pairs = list(zip(words[::2], words[1::2], strict=True))
    assert (b"onlcr", b"0") in pairs and (b"dns-proxy", b"1") in pairs
    default = guest_config(plan(), with_stdin=False, nics=[]).split(b"\0")
    assert b"onlcr" in default and default[default.index(b"dns-proxy") + 1] == b"0"


def test_docker_dns_is_used_only_when_resolv_conf_names_it(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search example\nnameserver 127.0.0.11\noptions ndots:0\n")
    assert netsetup.uses_docker_dns(resolv)
    resolv.write_text("nameserver 127.0.0.110\n# nameserver 127.0.0.11\n")
    assert not netsetup.uses_docker_dns(resolv)
    assert not netsetup.uses_docker_dns(tmp_path / "absent")


def test_runcvm_display_and_disks_are_read_by_the_cores_parsers(tmp_path: Path, image_root: Path) -> None:
    def with_env(*env: str) -> LaunchPlan:
        return bundle.rewrite(docker_config(image_root, env=list(env)), tmp_path, paths(tmp_path), "abc")[1]

    assert (with_env().vnc_port, with_env().video) == (None, "none")
    vnc = with_env("RUNCVM_DISPLAY_MODE=vnc", "RUNCVM_QEMU_VNC_DISPLAY=2")
    assert (vnc.vnc_port, vnc.video) == (5902, "virtio")  # RunCVM's default adapter with VNC
    assert with_env("RUNCVM_DISPLAY_MODE=vnc", "RUNCVM_QEMU_VGA=std").video == "vga"
    assert with_env("RUNCVM_DISPLAY_MODE=headless", "RUNCVM_QEMU_VNC_DISPLAY=1").vnc_port == 5901
    assert with_env("RUNCVM_QEMU_VGA=cirrus").video == "cirrus"
    entries = "RUNCVM_DISKS=/disks/docker,/var/lib/docker,ext4,1G;/disks/old,/srv,ext3;/raw.img,2G"
    assert with_env(entries).disks == (
        Disk("/disks/docker", 1024, "ext4", "/var/lib/docker"), Disk("/disks/old", None, "ext3", "/srv"),
        Disk("/raw.img", 2048),
    )  # fmt: skip
    refusals = {
        "RUNCVM_QEMU_VGA=qxl": "RUNCVM_QEMU_VGA='qxl': one of virtio, vga",
        "RUNCVM_QEMU_VNC_DISPLAY=one": "RUNCVM_QEMU_VNC_DISPLAY='one'",
        "RUNCVM_DISKS=/d,/home,xfs,1G": "RUNCVM_DISKS='/d,/home,xfs,1G': .*FS one of ext4, ext3, ext2",
        "RUNCVM_DISKS=d,/home,ext4,1G": "RUNCVM_DISKS='d,/home,ext4,1G': .*absolute path in the container",
        "RUNCVM_DISKS=/d,home,ext4,1G": "RUNCVM_DISKS='/d,home,ext4,1G': .*MOUNT must be an absolute path",
        "RUNCVM_DISKS=/d,/home": "RUNCVM_DISKS='/d,/home'",
    }
    for env, message in refusals.items():
        with pytest.raises(ConfigError, match=message):
            with_env(env)
    with pytest.raises(ConfigError, match="RUNCVM_QEMU_VGA='none': a display adapter for VNC"):
        with_env("RUNCVM_DISPLAY_MODE=vnc", "RUNCVM_QEMU_VGA=none")
    assert LaunchPlan.from_json(with_env(entries).to_json()) == with_env(entries)


def test_domain_xml_with_disks_vnc_and_the_guest_config_with_two_nics_and_relays() -> None:
    files = VmFiles(
        Path("/g/vmlinuz"), Path("/run/v/initrd"), Path("/run/v/console.log"), Path("/run/v"), Path("/vm/rootfs")
    )
    disk = Disk("/disks/a", 1024, "ext4", "/data")
    attached = (AttachedDisk(Path("/vm/rootfs/disks/a"), "raw", disk.serial), AttachedDisk(Path("/b"), "qcow2", "s2"))
    shown = plan(vnc_port=5901, video="vga", disks=(disk,))
    root = validate_domain_xml(
        render_vm_xml(shown, files, AcceleratorChoice("tcg", "test"), [], attached, "169.254.77.1")
    )
    assert [(d.find("source").get("file"), d.find("driver").get("type"), d.find("target").get("dev"),
             d.findtext("serial")) for d in root.iterfind("devices/disk")] == [
        ("/vm/rootfs/disks/a", "raw", "vda", disk.serial), ("/b", "qcow2", "vdb", "s2")]  # fmt: skip
    graphics = root.find("devices/graphics")
    assert (graphics.get("type"), graphics.get("port"), graphics.get("listen")) == ("vnc", "5901", "169.254.77.1")
    assert root.find("devices/video/model").get("type") == "vga"
    assert root.findtext("os/cmdline").startswith("console=tty0 console=ttyS0")
    bare = validate_domain_xml(render_vm_xml(plan(), files, AcceleratorChoice("tcg", "test"), []))
    assert bare.find("devices/graphics") is None and bare.find("devices/video") is None

    nics = [Nic(f"02:42:ac:1{i}:00:02", f"vt-tap{i}", f"172.1{i}.0.2", 16, "172.10.0.1" if i == 0 else None)
            for i in range(2)]  # fmt: skip
    nics[1] = replace(nics[1], ipv6=("fd00:1::2/64", "fd00:2::2/64"), gateway6="fd00:1::1")
    config = guest_config(shown, with_stdin=False, nics=nics, disks=(disk, Disk("/bare", 1)),
                          hostlink="169.254.77.1", relays=(PortRelay("0.0.0.0", 5901),))  # fmt: skip
    words = config.split(b"\0")[:-1]
    pairs = [(key.decode(), value.decode()) for key, value in zip(words[::2], words[1::2], strict=True)]
    assert [value for key, value in pairs if key in ("net-mac", "net-addr", "net-gateway")] == [
        "02:42:ac:10:00:02", "172.10.0.2", "172.10.0.1", "02:42:ac:11:00:02", "172.11.0.2", ""]  # fmt: skip
    ipv6 = [pair for pair in pairs if pair[0] in ("net-mac", "net-addr6", "net-gateway6")]
    assert ipv6 == [
        ("net-mac", "02:42:ac:10:00:02"), ("net-gateway6", ""), ("net-mac", "02:42:ac:11:00:02"),
        ("net-addr6", "fd00:1::2/64"), ("net-addr6", "fd00:2::2/64"), ("net-gateway6", "fd00:1::1"),
    ]  # fmt: skip
    assert [pair for pair in pairs if pair[0].startswith("disk-")] == [
        ("disk-serial", disk.serial),
        ("disk-fs", "ext4"),
        ("disk-mount", "/data"),
    ]  # a bare disk: not mounted
    assert ("hostlink", "169.254.77.1") in pairs and ("relay", "0.0.0.0 5901") in pairs


def test_disks_are_created_formatted_and_filled_or_used_as_they_are(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "srv").mkdir(parents=True)
    (rootfs / "srv" / "seed.txt").write_text("from the image")
    (rootfs / "vol").symlink_to("/elsewhere")  # inside the image's root, not the launcher's
    (rootfs / "elsewhere").mkdir()
    made = disks.attach_disks((Disk("/vol/d/new.img", 8, "ext4", "/srv"),), rootfs)
    assert made[0].source == rootfs / "elsewhere" / "d" / "new.img" and made[0].format == "raw"
    assert made[0].source.stat().st_size == 8 << 20
    listing = subprocess.run(["debugfs", "-R", "cat /seed.txt", str(made[0].source)], capture_output=True, text=True)
    assert listing.stdout == "from the image"  # prepopulated from the mount directory, as RunCVM does
    before = made[0].source.read_bytes()
    assert disks.attach_disks((Disk("/vol/d/new.img", 8, "ext4", "/srv"),), rootfs)[0].format == "raw"
    assert made[0].source.read_bytes() == before  # an existing disk is never formatted again
    qcow2 = rootfs / "q.qcow2"
    qcow2.write_bytes(b"QFI\xfb" + bytes(12))
    assert disks.attach_disks((Disk("/q.qcow2"),), rootfs)[0].format == "qcow2"
    qcow2.write_bytes(b"QFI\xfb" + bytes(4) + (512).to_bytes(8, "big"))
    with pytest.raises(ConfigError, match=r"RUNCVM_DISKS='/q\.qcow2': a raw disk or a qcow2 image without a backing"):
        disks.attach_disks((Disk("/q.qcow2"),), rootfs)
    with pytest.raises(ConfigError, match="RUNCVM_DISKS='/absent': an existing file, or give a SIZE"):
        disks.attach_disks((Disk("/absent", None, "ext4", "/srv"),), rootfs)
    with pytest.raises(ConfigError, match="RUNCVM_DISKS='/srv': a regular file"):
        disks.attach_disks((Disk("/srv"),), rootfs)


def test_the_guest_asks_the_servers_docker_forwards_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.255.255.53\nnameserver ::1\nnameserver 127.0.0.1\nsearch x\n")
    assert netsetup.docker_upstream_servers(resolv_conf=resolv) == ("10.255.255.53",)
    resolved = tmp_path / "systemd-resolv.conf"
    resolved.write_text("nameserver 192.0.2.53\n")
    monkeypatch.setattr(netsetup, "SYSTEMD_RESOLV_CONF", resolved)
    resolv.write_text("nameserver 127.0.0.53\n")  # systemd-resolved: its real servers, as dockerd reads them
    assert netsetup.docker_upstream_servers(resolv_conf=resolv) == ("192.0.2.53",)
    monkeypatch.setattr(netsetup, "SYSTEMD_RESOLV_CONF", tmp_path / "absent")
    assert netsetup.docker_upstream_servers(resolv_conf=resolv) == ("8.8.8.8", "8.8.4.4")  # dockerd's defaults
    record = tmp_path / "containers" / "abc"
    record.mkdir(parents=True)
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"dns": ["192.0.2.7", "127.0.0.1"]}')
    assert netsetup.docker_upstream_servers(record, daemon_json, resolv) == ("192.0.2.7",)  # daemon.json's
    (record / "hostconfig.json").write_text('{"Dns": ["127.0.0.1", "fd00::1", "192.0.2.9", "10.0.0.9"]}')
    assert netsetup.docker_upstream_servers(record, daemon_json, resolv) == ("192.0.2.9", "10.0.0.9")  # --dns
    (record / "hostconfig.json").write_text('{"Dns": ["127.0.0.1"]}')  # asked from the host's namespace
    assert netsetup.docker_upstream_servers(record, daemon_json, resolv) == ("192.0.2.7",)
    (record / "hostconfig.json").write_text('{"Dns": null}')
    daemon_json.write_text("not json")
    assert netsetup.docker_upstream_servers(record, daemon_json, resolv) == ("8.8.8.8", "8.8.4.4")
    shown = plan(dns_upstreams=("192.0.2.53",))
    assert b"dns-upstream\x00192.0.2.53\x00" in guest_config(shown, with_stdin=False, nics=[], dns_proxy=True)
    assert b"dns-upstream" not in guest_config(shown, with_stdin=False, nics=[], dns_proxy=False)
    assert LaunchPlan.from_json(shown.to_json()) == shown


def test_the_containers_dns_servers_are_read_from_dockerds_record(tmp_path: Path, image_root: Path) -> None:
    """dockerd keeps --dns to itself on a user network (resolv.conf names 127.0.0.11): its record
    of the container, the directory resolv.conf is bound from, has them."""
    record = tmp_path / "containers" / "abc"
    record.mkdir(parents=True)
    (record / "hostconfig.json").write_text('{"Dns": ["192.0.2.10"], "DnsSearch": ["example"]}')
    config = docker_config(image_root)
    config["mounts"].append({"destination": "/etc/resolv.conf", "type": "bind", "source": str(record / "resolv.conf")})
    assert bundle.rewrite(config, tmp_path, paths(tmp_path), "abc")[1].dns_upstreams == ("192.0.2.10",)
