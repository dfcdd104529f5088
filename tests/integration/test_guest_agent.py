"""Inside the guest through its agent, on a host: exec, cp, keys, password, facts, and the refusals
of a guest without an agent.

One boot of the real Debian cloud guest for the module (the assertions share it), and one of the
tiny guest (no agent) for the refusals. Every command runs as users type it (`virtainer ...`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from tests.conftest import LIBVIRT_URI, forget_domain, unique_name
from tests.guests import cloud_guest, tiny_guest
from tests.ssh import SshKey, make_key
from tests.tiny_cli import tiny_up_args

pytestmark = [pytest.mark.guest, pytest.mark.cloud]
VIRTAINER = [sys.executable, "-m", "virtainer.cli"]
BIG = 50 * 1024 * 1024


def virtainer(*args: str, timeout: float = 300, **options: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*VIRTAINER, *args], capture_output=True, timeout=timeout, check=False, **options)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Booted:
    name: str
    address: str
    user: str
    key: SshKey
    vm_dir: Path

    def ssh(self, command: str, key: SshKey | None = None) -> subprocess.CompletedProcess[str]:
        return (key or self.key).run(f"{self.user}@{self.address}", command)

    def exec(self, *command: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
        return virtainer("exec", self.name, *options, "--", *command)


@pytest.fixture(scope="module")
def booted(module_vm_dir: Path) -> Iterator[Booted]:
    guest = cloud_guest()
    key = make_key(module_vm_dir)
    name = unique_name("agent")
    up = virtainer(
        "up", name, "--image", str(guest.base_image), "--os-variant", "debian12", "--ssh-keys", str(key.public),
        "--vcpus", "2", "--memory", "1024", "--state-dir", str(module_vm_dir / "state"),
        "--diff", str(module_vm_dir / "diff.qcow2"), "--boot-timeout", "420", timeout=600,
    )  # fmt: skip
    try:
        assert up.returncode == 0, f"virtainer up failed:\n{up.stderr.decode()}"
        address = next(line.split()[1] for line in up.stdout.decode().splitlines() if line.startswith("address:"))
        yield Booted(name, address, guest.default_user, key, module_vm_dir)
    finally:
        forget_domain(name)


def test_exec_gives_stdout_stderr_and_exit_code_separately(booted: Booted) -> None:
    done = booted.exec("sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.stdout, done.stderr, done.returncode) == (b"out\n", b"err\n", 3)


def test_exec_user_env_workdir_and_stdin(booted: Booted) -> None:
    options = ("--user", booted.user, "--env", "GREETING=hello there", "--workdir", "/tmp", "-i")
    done = subprocess.run(
        [*VIRTAINER, "exec", booted.name, *options, "--", "sh", "-c", 'id -un; echo "$GREETING"; pwd; cat'],
        input=b"from stdin\x00\xff", capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{booted.user}\nhello there\n/tmp\n".encode() + b"from stdin\x00\xff"


def test_exec_50_mib_of_binary_output_arrives_intact(booted: Booted, tmp_path: Path) -> None:
    made = booted.exec("sh", "-c", f"head -c {BIG} /dev/urandom > /var/tmp/big && sha256sum /var/tmp/big")
    assert made.returncode == 0, made.stderr
    expected = made.stdout.split()[0].decode()
    output = tmp_path / "big"
    with output.open("wb") as sink:
        done = subprocess.run(
            [*VIRTAINER, "exec", booted.name, "--", "cat", "/var/tmp/big"], stdout=sink, stderr=subprocess.PIPE,
            timeout=600, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert output.stat().st_size == BIG
    assert hashlib.sha256(output.read_bytes()).hexdigest() == expected


def test_exec_past_its_timeout_is_killed_in_the_guest(booted: Booted) -> None:
    script = "echo $$ > /var/tmp/timed.sh.pid; sleep 300 & echo $! > /var/tmp/timed.child.pid; wait"
    done = booted.exec("sh", "-c", script, options=("--timeout", "3"))
    assert done.returncode == 137, done.stderr
    assert b"killed in the guest" in done.stderr
    check = booted.exec(
        "sh", "-c", "for p in $(cat /var/tmp/timed.*.pid); do kill -0 $p 2>/dev/null && echo alive $p; done; true"
    )
    assert check.returncode == 0 and check.stdout == b"", check.stdout  # neither the shell nor its child lives


def tree_facts(root: Path) -> dict[str, tuple[int, str]]:
    """path -> (mode, sha256 of the content or the symlink target) for everything under root."""
    facts = {".": (stat.S_IMODE(root.lstat().st_mode), "dir")}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content = "->" + str(path.readlink())
        elif path.is_dir():
            content = "dir"
        else:
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        facts[str(path.relative_to(root))] = (stat.S_IMODE(info.st_mode), content)
    return facts


def test_cp_a_directory_in_and_out_keeps_modes_and_contents(booted: Booted, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    (source / "private").mkdir(parents=True)
    (source / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (source / "script.sh").chmod(0o755)
    (source / "private" / "secret").write_bytes(os.urandom(300_000))
    (source / "private" / "secret").chmod(0o600)
    (source / "private").chmod(0o700)
    (source / "shared.txt").write_text("shared\n")
    (source / "shared.txt").chmod(0o664)
    (source / "link").symlink_to("shared.txt")
    source.chmod(0o750)
    expected = tree_facts(source)

    place = f"/var/tmp/{uuid.uuid4().hex[:8]}"
    assert booted.exec("mkdir", place).returncode == 0
    copied_in = virtainer("cp", str(source), f"{booted.name}:{place}/")
    assert copied_in.returncode == 0, copied_in.stderr
    listing = booted.exec(
        "sh", "-c", f"cd {place}/tree && find . -printf '%P %m %y\\n' | sort && sha256sum private/secret"
    )
    assert b"private/secret 600 f" in listing.stdout and b"private 700 d" in listing.stdout
    assert b" 750 d" in listing.stdout and b"link 777 l" in listing.stdout
    assert expected["private/secret"][1].encode() in listing.stdout

    again = virtainer("cp", str(source), f"{booted.name}:{place}/")
    assert again.returncode == 4 and b"exists" in again.stderr  # nothing overwritten silently

    back = tmp_path / "back"
    copied_out = virtainer("cp", f"{booted.name}:{place}/tree", str(back))
    assert copied_out.returncode == 0, copied_out.stderr
    assert tree_facts(back) == expected


def test_keys_add_lets_that_key_in_and_remove_shuts_it_out(booted: Booted, tmp_path: Path) -> None:
    other = make_key(tmp_path)
    assert booted.ssh("true", key=other).returncode != 0
    added = virtainer("keys", "add", booted.name, str(other.public))
    assert added.returncode == 0, added.stderr
    assert other.public.read_text().split()[1].encode() in added.stdout
    login = booted.ssh("id -un", key=other)
    assert login.returncode == 0 and login.stdout.strip() == booted.user, login.stderr
    removed = virtainer("keys", "remove", booted.name, other.public.read_text().strip())
    assert removed.returncode == 0, removed.stderr
    assert booted.ssh("true", key=other).returncode != 0
    assert booted.ssh("true").returncode == 0  # the key given at `up` is still there
    listed = virtainer("keys", "list", booted.name)
    assert booted.key.public.read_text().split()[1].encode() in listed.stdout


def test_password_then_a_console_login_works(booted: Booted) -> None:
    done = virtainer("password", booted.name)
    assert done.returncode == 0, done.stderr
    line = done.stdout.decode().strip()
    assert line.startswith(f"password for {booted.user}@{booted.name} (shown once): ")
    password = line.rsplit(" ", 1)[1]
    console = pexpect.spawn("virsh", ["-c", LIBVIRT_URI, "console", booted.name, "--force"], timeout=60)
    try:
        console.expect("Escape character")
        console.send("\r")
        if console.expect(["login: ", r"\$ "]) == 1:  # a session left open on the console: end it
            console.sendline("exit")
            console.expect("login: ")
        console.sendline(booted.user)
        console.expect("Password: ")
        console.sendline(password)
        console.expect(r"\$ ")
        console.sendline("echo LOGGED-IN-$((6*7))")
        console.expect("LOGGED-IN-42")
        console.sendline("exit")
    finally:
        console.sendcontrol("]")
        console.close(force=True)


def test_status_facts_match_what_ssh_sees(booted: Booted) -> None:
    status = json.loads(virtainer("status", booted.name, "--json").stdout)
    facts = status["guest"]
    seen = booted.ssh(
        "cat /etc/os-release; echo ---; df -B1 --output=target,used,avail,fstype /; echo ---; uname -r; hostname"
    )
    assert seen.returncode == 0, seen.stderr
    os_release, df, rest = seen.stdout.split("---\n")
    release = dict(line.split("=", 1) for line in os_release.splitlines() if "=" in line)
    assert facts["os_id"] == release["ID"]
    assert facts["os_version_id"] == release["VERSION_ID"].strip('"')
    assert facts["os_pretty_name"] == release["PRETTY_NAME"].strip('"')
    target, used, available, fstype = df.splitlines()[1].split()
    root = next(item for item in facts["filesystems"] if item["mountpoint"] == target)
    # the agent's total leaves out root's reserved blocks: df's used + available (constant)
    assert (root["total_bytes"], root["fstype"]) == (int(used) + int(available), fstype)
    assert abs(root["used_bytes"] - int(used)) < 64 << 20  # what the guest wrote meanwhile
    kernel, hostname = rest.split()
    assert (facts["kernel_release"], facts["hostname"]) == (kernel, hostname)
    addresses = [address for interface in facts["interfaces"] for address in interface["addresses"]]
    assert any(address.startswith(f"{booted.address}/") for address in addresses)
    agent = next(record for record in status["readiness"]["stages"] if record["stage"] == "agent")
    assert agent["detail"].startswith("qemu-ga ") and facts["agent_version"] in agent["detail"]


# ---------------------------------------------------------------------------------------------
# no agent: the tiny guest


@pytest.fixture(scope="module")
def agentless(module_vm_dir: Path) -> Iterator[str]:
    tiny = tiny_guest()
    name = unique_name("noagent")
    vm_dir = module_vm_dir / "tiny"
    vm_dir.mkdir()
    vm_dir.chmod(0o755)
    args = tiny_up_args(tiny, name, vm_dir)
    args[2:2] = ["--image", str(tiny.base_image), "--diff", str(vm_dir / "diff.qcow2")]
    up = virtainer(*args)
    try:
        assert up.returncode == 0, up.stderr
        yield name
    finally:
        forget_domain(name)


@pytest.mark.parametrize(
    "command",
    [
        ["exec", "{vm}", "--", "true"],
        ["cp", "{file}", "{vm}:/tmp/"],
        ["cp", "{vm}:/etc/hostname", "{dir}/out"],
        ["keys", "list", "{vm}", "--user", "root"],
        ["keys", "add", "{vm}", "{pub}", "--user", "root"],
        ["keys", "remove", "{vm}", "{pub}", "--user", "root"],
        ["password", "{vm}", "--user", "root"],
    ],
    ids=lambda command: "-".join(part for part in command[:2] if "{" not in part),
)
def test_without_an_agent_each_command_refuses_in_one_line(agentless: str, command: list[str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    key = make_key(tmp_path)
    values = {"vm": agentless, "file": str(tmp_path / "file"), "dir": str(tmp_path), "pub": str(key.public)}
    done = virtainer(*(part.format(**values) for part in command), timeout=60)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "has no guest agent answering" in lines[0], lines
    assert f"cannot run in it (use the serial console: virtainer console {agentless})" in lines[0], lines
    assert done.stdout == b""
    assert not (tmp_path / "out").exists()


def test_status_of_an_agentless_guest_has_no_facts(agentless: str) -> None:
    status = json.loads(virtainer("status", agentless, "--json").stdout)
    assert status["state"] == "running" and status["guest"] is None


def test_cleanup_leaves_no_exec_directories(booted: Booted) -> None:
    done = booted.exec("sh", "-c", "ls -d /tmp/virtainer-exec.* 2>/dev/null | wc -l")
    assert done.stdout.strip() == b"1"  # only this exec's own


def test_ssh_command_uses_its_own_key_added_through_the_agent(booted: Booted, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}
    done = virtainer("ssh", booted.name, "--", "id", "-un", env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == booted.user
    own = (tmp_path / "virtainer" / "ssh" / "id_ed25519.pub").read_text().split()[1]
    assert own.encode() in virtainer("keys", "list", booted.name).stdout


def test_the_rest_api_runs_the_same_operations(booted: Booted, agentless: str, tmp_path: Path) -> None:
    from tests.api.conftest import serving

    with serving(tmp_path, token=secrets.token_urlsafe(24)) as api, api.client() as client:
        vm = f"/v1/vms/{booted.name}"
        done = client.post(f"{vm}/exec", json={"command": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
        assert done.status_code == 200, done.text
        assert (done.json()["stdout"], done.json()["stderr"], done.json()["exit_code"]) == ("out\n", "err\n", 3)

        body = {"command": ["sh", "-c", "echo one; sleep 1; echo two >&2; head -c 3 /dev/zero"], "timeout_s": 60}
        with client.stream("POST", f"{vm}/exec/stream", json=body) as stream:
            assert stream.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in stream.iter_lines() if line]
        out = b"".join(base64.b64decode(line["data_b64"]) for line in lines if line.get("stream") == "stdout")
        err = b"".join(base64.b64decode(line["data_b64"]) for line in lines if line.get("stream") == "stderr")
        assert (out, err, lines[-1]["exit"]["exit_code"]) == (b"one\n\0\0\0", b"two\n", 0)

        facts = client.get(f"{vm}/guest").json()
        assert facts["os_id"] == "debian" and facts["agent_version"]
        assert client.get(vm).json()["guest"]["hostname"] == facts["hostname"]
        keys = client.get(f"{vm}/keys").json()
        assert keys["user"] == booted.user and len(keys["keys"]) >= 1
        assert client.post(f"{vm}/password", json={"user": booted.user}).json()["password"]

        assert api.client(token=None).post(f"{vm}/exec", json={"command": ["true"]}).status_code == 401
        refused = client.post(f"/v1/vms/{agentless}/exec", json={"command": ["true"]})
        assert refused.status_code == 409 and "no guest agent answering" in refused.json()["error"]["message"]
        refused = client.post(f"/v1/vms/{agentless}/exec/stream", json={"command": ["true"]})
        assert refused.status_code == 409
