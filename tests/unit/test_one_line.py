"""One line, never a traceback: each input and failure found by trying virtainer as a hostile user,
a hostile guest or a failing libvirt would, reproduced (each of these failed before its fix)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

from virtainer import cli, snapshots, storage
from virtainer.controller.controller import Controller
from virtainer.controller.logsink import LogSink
from virtainer.errors import ConfigError, HypervisorError, VirtainerError
from virtainer.exit_codes import EXIT_OK
from virtainer.hypervisor import DomainState, Hypervisor
from virtainer.readiness import ReadinessProbe, StageFailed, cloud_init_outcome
from virtainer.spec import HostFacts, RawValue, VmSpec, resolve_spec, settings_from_env

HOST = HostFacts(cpus=4, memory_mib=8192)


def resolve(**values: object) -> VmSpec:
    return resolve_spec({key: RawValue(value, key) for key, value in values.items()}, HOST)


def refused(message: str, **values: object) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve(**values)
    text = str(caught.value)
    assert message in text and "\n" not in text, text
    return text


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("memory", "²", "a size such as"),  # str.isdigit("²") is True, int("²") raises
        ("memory", "\u0661\u0662\u0668M", "a size such as"),  # Arabic-Indic digits: int() would read 128
        ("vcpus", "\u0661\u0662", "a whole number"),
        ("vcpus", "²", "a whole number"),
        ("disk_size", "9" * 400, "a size such as"),  # float() overflowed to inf, int(inf) raised
        ("memory", "1e400", "a size such as"),
        ("vnc", "⁵⁹⁰⁰", "a TCP port"),
        ("name", "web\n", "1-63 letters"),  # `$` matches before a trailing newline
        ("hostname", "web\n", "an RFC 1123 host label"),
        ("mac", "52:54:00:12:34:56\nx", "six hex pairs"),
        ("user", "debian\n", "a Unix user name"),
        ("diff", "~nosuchuser/diff.qcow2", "'~nosuchuser': no such user"),
        ("state_dir", "~nosuchuser", "'~nosuchuser': no such user"),
        ("diff", "/vms/a\x1b[2Jb.qcow2", "without control characters"),
        ("state_dir", "/vms/a\nb", "without control characters"),
        ("diff", "/vms/" + "x" * 300 + "/d.qcow2", "names of at most 255"),
        ("seed_path", "/vms/seed\u2028.iso", "without control characters"),
        ("guest_lan", "0.1.0.0/16", "outside 0.0.0.0/8"),
        ("guest_lan", "240.0.0.0/24", "240.0.0.0/4"),
        ("guest_lan", "127.1.0.0/16", "loopback"),
        ("guest_lan", "224.1.0.0/24", "multicast"),
        ("guest_lan", "169.254.0.0/24", "link-local"),
        ("image_url", "http://:44119/disk.qcow2", "with a host"),  # what an empty gateway made
        ("image_url", "file://otherhost/x.qcow2", "file:///PATH"),
        ("image_url", "file:///nonexistent/x.qcow2", "an existing file"),
        ("boot_timeout", "0", "a positive number of seconds"),
        ("boot_timeout", "-1", "a positive number of seconds"),
        ("boot_timeout", "nan", "a positive number of seconds"),
        ("stop_timeout", "inf", "a positive number of seconds"),
        ("stop_timeout", "1e400", "a positive number of seconds"),
        ("stop_timeout", float("nan"), "a positive number of seconds"),  # a YAML .nan
        ("boot_timeout", 10**400, "a positive number of seconds"),
        ("password", "secret\x1bpassword", "printable characters"),
        ("vnc_listen", "fe80::1%\x1bx", "an IPv4 or IPv6 address"),
    ],
)  # fmt: skip
def test_bad_text_is_one_config_error(key: str, value: object, accepted: str) -> None:
    extra = {"vnc": "on"} if key == "vnc_listen" else {}
    extra |= {"network": "user"} if key == "guest_lan" else {}
    refused(accepted, **{key: value}, **extra)


def test_control_characters_in_the_kernel_command_line(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    for cmdline in ("console=ttyS0\nroot=/dev/evil", "console=ttyS0 \x1b[2J", "a\x00b"):
        refused("one line of at most 2048 printable characters", kernel=str(kernel), cmdline=cmdline)
    assert resolve(kernel=str(kernel), cmdline="console=ttyS0 quiet").direct_boot.cmdline == "console=ttyS0 quiet"


@pytest.mark.parametrize("mount", ["/mnt/../etc", "/mnt/./data", "/mnt//data", "/mnt/da ta", "/mnt/\x1b", "/.."])
def test_mount_point_is_a_normal_absolute_path(mount: str, tmp_path: Path) -> None:
    refused("MOUNT must be an absolute path", disks=[f"{tmp_path}/d.qcow2,{mount},ext4,1G"])


def test_more_data_disks_than_names_are_refused(tmp_path: Path) -> None:
    disks = [f"{tmp_path}/d{n}.qcow2,1G" for n in range(25)]
    refused("at most 24 data disks on the virtio bus (vda..vdz: the system disk and the seed", disks=disks)
    assert len(resolve(disks=disks[:24]).data_disks) == 24


def test_a_file_url_is_a_local_image(tmp_path: Path) -> None:
    image = tmp_path / "base image.qcow2"
    image.write_bytes(b"QFI\xfb")
    spec = resolve(image_url=f"file://{tmp_path}/base%20image.qcow2")
    assert spec.image.path == image and spec.image.url is None
    assert resolve(image_url=f"file://localhost{image}").image.path == image


def test_ssh_keys_from_a_device_or_a_huge_file_are_refused(tmp_path: Path) -> None:
    refused("not a regular file", ssh_keys=["/dev/zero"])  # read_text() would never end
    big = tmp_path / "keys.pub"
    big.write_bytes(b"#" * (2 << 20))
    refused("larger than 1024 KiB", ssh_keys=[str(big)])


def test_unwritable_places_are_refused_before_any_write(tmp_path: Path) -> None:
    """A state directory that cannot be made (under a file), a diff directory under /proc."""
    image = tmp_path / "base.qcow2"
    image.write_bytes(b"QFI\xfb")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec = resolve(image=str(image), state_dir=str(blocker / "state"), diff=str(tmp_path / "diff.qcow2"))
    with pytest.raises(ConfigError, match=r"invalid state_dir=.*a writable directory \(.*a-file is not a directory"):
        storage.check_writable(spec)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file", "base.qcow2"]  # nothing written
    storage.check_writable(resolve(image=str(image), state_dir=str(tmp_path / "s"), diff=str(tmp_path / "d.qcow2")))


def test_a_read_only_file_system_is_refused(tmp_path: Path) -> None:
    """A read-only mount (a volume given with :ro) holding the diff's directory."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        spec = resolve(kernel="/proc/self/exe", state_dir=str(tmp_path / "state"), diff=str(mount / "d.qcow2"))
        with pytest.raises(ConfigError, match=r"invalid diff=.*is on a read-only file system"):
            storage.check_writable(spec)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=30, check=False)


def test_two_names_of_one_setting_disagreeing_are_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_spec(settings_from_env({"VIRTAINER_NAME": "web", "VM_NAME": "db"}), HOST)
    assert "VM_NAME='db'" in str(caught.value) and "VIRTAINER_NAME='web'" in str(caught.value)


# -- the CLI -----------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "virtainer.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, check=False)  # fmt: skip


@pytest.mark.parametrize("args", [["down", "--timeout", "nan"], ["down", "--timeout", "-1"], ["stop", "--timeout", "0"],
                                  ["bogus"], ["up", "--no-such-flag"]])  # fmt: skip
def test_cli_usage_errors_are_one_line_exit_2(args: list[str]) -> None:
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "error:" in done.stderr, done.stderr


def test_cli_unexpected_error_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_args: object) -> int:
        raise RuntimeError("something\nnobody expected")

    monkeypatch.setitem(cli.COMMANDS, "status", broken)
    monkeypatch.delenv("VIRTAINER_DEBUG", raising=False)
    assert cli.main(["status"]) == 1
    error = capsys.readouterr().err
    assert error.splitlines() == [
        "virtainer: error: unexpected RuntimeError: something nobody expected "
        "(--debug or VIRTAINER_DEBUG=1 shows the traceback)"
    ]
    assert cli.main(["--debug", "status"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("VIRTAINER_DEBUG", "1")
    assert cli.main(["status"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_cli_progress_lines_print_paths_with_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    cli.CliReporter().step("created diff /vms/[/x]/diff.qcow2")  # rich markup would raise MarkupError
    assert "/vms/[/x]/diff.qcow2" in capsys.readouterr().err


# -- libvirt: no raw error escapes ---------------------------------------------------------------


def test_no_raw_libvirt_error_leaves_the_hypervisor() -> None:
    """libvirt's in-process test driver, its connection closed underneath: every call is a
    VirtainerError (list_names, metadata and state let libvirtError through before)."""
    hv = Hypervisor("test:///default")
    assert hv.list_names() == ["test"]
    hv.conn.close()
    calls = [hv.list_names, lambda: hv.state("test"), lambda: hv.info("test"), lambda: hv.xml("test"),
             lambda: hv.addresses("test"), lambda: hv.snapshot_names("test"), lambda: hv.fs_thaw("test")]  # fmt: skip
    for call in calls:
        with pytest.raises(VirtainerError):
            call()


class FlakyHypervisor:
    """A domain whose state lookup fails twice (a raw libvirt error, then anything), then is off."""

    def __init__(self) -> None:
        self.calls = 0

    def state(self, _name: str) -> DomainState:
        self.calls += 1
        if self.calls == 1:
            raise libvirt.libvirtError("virDomainGetState: internal error: client socket is closed")
        if self.calls == 2:
            raise KeyError("surprise")
        return DomainState.SHUT_OFF

    def shutoff_reason(self, _name: str) -> str:
        return "shutdown"

    def close(self) -> None:
        pass


class AliveDaemon:
    def alive(self) -> bool:
        return True


class Lines(LogSink):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)


def test_the_supervision_loop_survives_errors_and_keeps_supervising(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("virtainer.controller.controller.MONITOR_INTERVAL_S", 0.01)
    sink = Lines()
    controller = Controller({}, sink=sink)
    controller.spec = resolve(name="vm")
    controller.daemon = AliveDaemon()  # type: ignore[assignment]
    controller.hv = FlakyHypervisor()  # type: ignore[assignment]
    assert controller._supervise() == EXIT_OK  # it went on to see the guest power off
    warnings = [line for line in sink.lines if line.startswith("warning: supervision")]
    assert len(warnings) == 2 and "still supervising" in warnings[0], sink.lines
    assert "KeyError" in warnings[1]


# -- what the guest writes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"\xff\xfe", b"[]", b'{"v1": []}', b'{"v1": {"errors": 7}}', b'"text"', b"[" * 100000,
     b'{"v1": {"errors": "a string"}}', b"1" * 5000],
)  # fmt: skip
def test_a_malformed_result_json_fails_the_stage_with_its_reason(content: bytes) -> None:
    with pytest.raises(StageFailed, match=r"cloud-init stage failed: /run/cloud-init/result\.json"):
        cloud_init_outcome(content)


def test_result_json_errors_of_any_shape_are_reported() -> None:
    assert cloud_init_outcome(b'{"v1": {"errors": []}}') == "done"
    detail = cloud_init_outcome(b'{"v1": {"errors": ["bad\\nthing", {"x": 1}, 3]}}')
    assert detail == 'done with errors: bad thing; {"x": 1}; 3'


class Agent:
    """A guest agent answering file reads with what a hostile guest may send."""

    name = "vm"

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)

    def agent_command(self, command: dict[str, object], timeout_s: int = 5) -> object:
        if command["execute"] == "guest-file-close":
            raise HypervisorError("agent gone")
        return self.answers.pop(0)


@pytest.mark.parametrize(
    ("answers", "reason"),
    [((None,), "for an open file"), (("seven",), "for an open file"), ((1, "junk"), "read answer is not an object"),
     ((1, {"buf-b64": "!!!", "eof": True}), "invalid base64"),
     ((1, {"buf-b64": "e30=", "count": 2, "eof": True}), "has no")],
)  # fmt: skip
def test_the_cloud_init_probe_never_crashes_on_agent_answers(answers: tuple[object, ...], reason: str) -> None:
    with pytest.raises(StageFailed, match=reason):
        ReadinessProbe(Agent(*answers)).cloud_init()  # type: ignore[arg-type]


# -- snapshots: a failed thaw ---------------------------------------------------------------


class FreezingAgent:
    """A domain handle whose agent freezes but never thaws."""

    name = "vm"

    def __init__(self) -> None:
        self.thaws = 0

    def agent_command(self, *_args: object, **_kwargs: object) -> object:
        return {}

    def fs_freeze(self) -> int:
        return 2

    def fs_thaw(self) -> None:
        self.thaws += 1
        raise HypervisorError("guest agent could not thaw filesystems: timeout")


def test_a_failed_thaw_is_reported_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots, "THAW_PAUSE_S", 0)
    agent = FreezingAgent()
    with pytest.raises(snapshots.ThawError) as caught, snapshots.frozen_filesystems(agent) as frozen:  # type: ignore[arg-type]
        assert frozen
    assert caught.value.snapshot_taken and "could not be thawed" in str(caught.value)
    assert "virsh domfsthaw" in str(caught.value)
    assert agent.thaws == snapshots.THAW_ATTEMPTS  # retried before reporting
    with pytest.raises(snapshots.ThawError) as caught, snapshots.frozen_filesystems(agent):  # type: ignore[arg-type]
        raise HypervisorError("snapshot failed")
    assert not caught.value.snapshot_taken and "snapshot failed" in str(caught.value)


def test_reserved_ports_under_both_names_must_agree() -> None:
    from virtainer.controller.config import controller_config

    with pytest.raises(ConfigError, match="VIRTAINER_CONTROLLER_PORTS='81': the same setting as"):
        controller_config({"VIRTAINER_RESERVED_PORTS": "80", "VIRTAINER_CONTROLLER_PORTS": "81"})
    both = controller_config({"VIRTAINER_RESERVED_PORTS": "80", "VIRTAINER_CONTROLLER_PORTS": "tcp:80"})
    assert both.reserved_ports == (("tcp", (80, 80)),)
    with pytest.raises(ConfigError, match="VIRTAINER_RESERVED_PORTS"):
        controller_config({"VIRTAINER_RESERVED_PORTS": "\u0668\u0660"})  # Arabic-Indic 80


@pytest.mark.parametrize(("content", "accepted"), [(None, "a spec file of at most 4 MiB"),
                                                   (b"\xff\xfe", "a UTF-8 text file"),
                                                   (b"[" * 100000, "nested less deeply")])  # fmt: skip
def test_a_spec_file_is_read_with_care(content: bytes | None, accepted: str, tmp_path: Path) -> None:
    from virtainer.spec import settings_from_file

    path = Path("/dev/zero") if content is None else tmp_path / "vm.yaml"  # /dev/zero: never ends
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=accepted):
        settings_from_file(path)


@pytest.mark.parametrize("debug", ["", "1"])
def test_the_container_entrypoint_ends_an_unexpected_error_with_one_line(debug: str, tmp_path: Path) -> None:
    """container/entrypoint.py -> controller main -> run(): a bug deep inside is one line, exit 1."""
    entrypoint = Path(__file__).parents[2] / "container" / "entrypoint.py"
    code = (
        "import runpy, virtainer.controller.controller as c\n"
        "c.Controller._run = lambda self: {}['no such key']\n"
        f"runpy.run_path({str(entrypoint)!r}, run_name='__main__')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "VIRTAINER_DEBUG": debug, "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                          cwd=Path(__file__).parents[2], check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("virtainer: error: unexpected KeyError: 'no such key'"), done.stderr
    assert ("Traceback" in done.stderr) == bool(debug), done.stderr
    if not debug:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_guest_exec_names_match_as_a_whole() -> None:
    from virtainer.guest import ExecRequest

    for bad in ({"user": "root\n"}, {"env": ("PATH\n=/bin",)}):
        with pytest.raises(ConfigError):
            ExecRequest(argv=("true",), **bad)  # type: ignore[arg-type]
    assert ExecRequest(argv=("true",), user="root", env=("PATH=/bin",)).user == "root"
