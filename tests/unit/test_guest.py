"""Pure logic of virtainer.guest: requests refused before the guest is touched, libvirt's flat
guest facts as dataclasses, and a hostile guest's tar stream refused before anything is written."""

from __future__ import annotations

import io
import itertools
import tarfile
from pathlib import Path

import pytest

from virtainer import guest
from virtainer.errors import ConfigError, ConflictError
from virtainer.guest import agent, execute, files
from virtainer.spec import resolve_spec, settings_from_mapping


@pytest.mark.parametrize(
    ("fields", "setting"),
    [
        ({"argv": ()}, "command"),
        ({"argv": ("",)}, "command"),
        ({"argv": ("ls",), "user": "bad user"}, "--user"),
        ({"argv": ("ls",), "env": ("NOEQUALS",)}, "--env"),
        ({"argv": ("ls",), "env": ("1BAD=x",)}, "--env"),
        ({"argv": ("ls",), "timeout_s": 0}, "--timeout"),
        ({"argv": ("ls", "a\0b")}, "command"),
    ],
)
def test_bad_exec_requests_are_refused_naming_the_setting(fields: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as refused:
        guest.ExecRequest(**fields)  # type: ignore[arg-type]
    assert refused.value.setting == setting
    assert "\n" not in str(refused.value)


def test_a_user_command_keeps_its_environment_after_setpriv() -> None:
    request = guest.ExecRequest(("printenv", "A"), user="debian", env=("A=1",), timeout_s=2.5)
    argv, env = execute._command_line(request, "/tmp/virtainer-exec.x")
    assert argv[:6] == ["/bin/sh", "-c", execute._RUN, "sh", "/tmp/virtainer-exec.x", "2.5"]
    assert argv[6:] == ["/bin/sh", "-c", execute._AS_USER, "sh", "debian", "env", "--", "A=1", "printenv", "A"]
    assert "A=1" not in env  # setpriv --reset-env would drop it: it is set after


def test_root_commands_get_their_environment_directly() -> None:
    argv, env = execute._command_line(guest.ExecRequest(("true",), env=("A=1",), workdir="/srv"), "/d")
    assert argv[4:] == ["/d", "0", "true"]  # no timeout: timeout 0 (disabled)
    assert "A=1" in env and "VIRTAINER_WORKDIR=/srv" in env


def test_guest_info_parameters_become_facts() -> None:
    info = {
        "os.id": "debian", "os.version-id": "12", "os.pretty-name": "Debian GNU/Linux 12 (bookworm)",
        "os.kernel-release": "6.1.0-57-cloud-amd64", "hostname": "h", "timezone.name": "UTC", "timezone.offset": 0,
        "user.count": 1, "user.0.name": "debian", "user.0.login-time": 1700000000123,
        "fs.count": 1, "fs.0.mountpoint": "/", "fs.0.name": "vda1", "fs.0.fstype": "ext4",
        "fs.0.total-bytes": 1000, "fs.0.used-bytes": 400,
        "if.count": 1, "if.0.name": "ens2", "if.0.hwaddr": "52:54:00:00:00:01", "if.0.addr.count": 2,
        "if.0.addr.0.addr": "10.0.0.2", "if.0.addr.0.prefix": 24,
        "if.0.addr.1.addr": "fe80::1", "if.0.addr.1.prefix": 64,
    }  # fmt: skip
    facts = guest.parse_guest_info(info, "7.2.22")
    assert (facts.os_id, facts.os_version_id, facts.agent_version, facts.timezone_offset_s) == (
        "debian",
        "12",
        "7.2.22",
        0,
    )
    assert facts.users == (guest.GuestUser("debian", "", 1700000000.123),)
    assert facts.filesystems == (guest.GuestFilesystem("/", "vda1", "ext4", 1000, 400),)
    assert facts.interfaces == (guest.GuestInterface("ens2", "52:54:00:00:00:01", ("10.0.0.2/24", "fe80::1/64")),)


def test_missing_guest_info_parameters_are_empty_not_errors() -> None:
    facts = guest.parse_guest_info({"fs.count": 1})
    assert facts.filesystems == (guest.GuestFilesystem("", "", "", None, None),)
    assert facts.os_id == "" and facts.users == ()


def _archive(*members: tarfile.TarInfo) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    data.seek(0)
    return data


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.size = kind, linkname, 1 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize(
    "members",
    [
        [_member("base/../../escape")],
        [_member("/etc/passwd")],
        [_member("other")],
        [_member("base/dev", tarfile.CHRTYPE)],
        [_member("base/hard", tarfile.LNKTYPE, "/etc/shadow")],
        [_member("base/link", tarfile.SYMTYPE, "/etc"), _member("base/link/passwd")],
        [_member("base/link", tarfile.SYMTYPE, "/etc/passwd"), _member("base/link")],
        [_member("base/fifo", tarfile.FIFOTYPE)],
    ],
)
@pytest.mark.parametrize("filters", [True, False], ids=["with-tar-filters", "python-without-filters"])
def test_a_hostile_guest_archive_writes_nothing(
    members: list[tarfile.TarInfo], filters: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not filters:  # Debian 12's Python 3.11.2 (the container's) has no extraction filters
        monkeypatch.delattr(tarfile, "fully_trusted_filter", raising=False)
    with pytest.raises((ConflictError, tarfile.TarError)):
        files._extract(_archive(*members), tmp_path, "base")
    assert not any(path.is_file() for path in tmp_path.rglob("*") if not path.is_symlink())


def test_copy_paths_must_be_absolute_in_the_guest() -> None:
    assert guest.guest_path("/var/tmp/") == "/var/tmp"
    with pytest.raises(ConfigError):
        guest.guest_path("relative")


def test_keys_must_look_like_openssh_public_keys() -> None:
    assert guest.check_key(" ssh-ed25519 AAAA c ") == "ssh-ed25519 AAAA c"
    for bad in ("", "not-a-key AAAA", "ssh-ed25519", "ssh-ed25519 AAAA\nssh-rsa BBBB"):
        with pytest.raises(ConfigError):
            guest.check_key(bad)


@pytest.mark.parametrize(
    ("wait_for", "stages", "command"),
    [
        ("running,agent,exec:test -e /a, && true", ("running", "agent", "exec"), "test -e /a, && true"),
        (
            "exec:systemctl is-active ssh",
            ("running", "ip", "agent", "cloud-init", "ssh", "exec"),
            "systemctl is-active ssh",
        ),
        ("auto", ("running", "ip", "agent", "cloud-init", "ssh"), None),
    ],
)
def test_wait_for_takes_an_exec_probe_last(wait_for: str, stages: tuple[str, ...], command: str | None) -> None:
    spec = resolve_spec(settings_from_mapping({"name": "x", "image": "/etc/hostname", "wait_for": wait_for}, "test"))
    assert (spec.wait_for, spec.ready_command) == (stages, command)


@pytest.mark.parametrize("wait_for", ["exec:", "exec:  ", "bogus,exec:true", "running,exec:a\tb"])
def test_a_bad_exec_probe_is_refused(wait_for: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve_spec(settings_from_mapping({"name": "x", "image": "/etc/hostname", "wait_for": wait_for}, "test"))
    assert refused.value.setting == "wait_for (test)"


def test_a_plain_tree_from_the_guest_is_unpacked_with_its_modes(tmp_path: Path) -> None:
    directory, script, shared = _member("base", tarfile.DIRTYPE), _member("base/run.sh"), _member("base/shared")
    directory.mode, script.mode, shared.mode = 0o750, 0o4755, 0o664
    link = _member("base/link", tarfile.SYMTYPE, "run.sh")
    files._extract(_archive(directory, script, shared, link), tmp_path, "base")
    assert (tmp_path / "base").stat().st_mode & 0o7777 == 0o750
    assert (tmp_path / "base" / "run.sh").stat().st_mode & 0o7777 == 0o755  # no setuid from a guest
    assert (tmp_path / "base" / "shared").stat().st_mode & 0o7777 == 0o664
    assert (tmp_path / "base" / "link").readlink() == Path("run.sh")


def test_a_busy_agent_is_retried_only_when_the_command_was_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    from virtainer.errors import AgentUnavailableError

    calls: list[int] = []

    def busy_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise AgentUnavailableError("busy", busy=True)
        return "done"

    assert agent._patiently(busy_twice) == "done" and len(calls) == 3
    with pytest.raises(AgentUnavailableError):  # not connected at all: no retry
        agent._patiently(lambda: (_ for _ in ()).throw(AgentUnavailableError("no agent")))
    clock = itertools.count(0.0, 12.5)  # each call takes 12.5 s: the command itself timed out
    monkeypatch.setattr(agent.time, "monotonic", lambda: next(clock))
    calls.clear()
    with pytest.raises(AgentUnavailableError):
        agent._patiently(busy_twice)
    assert len(calls) == 1
