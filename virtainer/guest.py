"""Inside a running guest through the QEMU guest agent: exec, copy, SSH keys, passwords, facts.

No SSH or network is needed, only qemu-guest-agent in the guest. The agent's own `guest-exec`
output capture is capped (16 MiB in QEMU 7) and handed over only at exit, so a command here runs
with stdout and stderr redirected to files in a private temporary directory of the guest, which
are read while it runs (`guest-file-read`, base64) and removed afterwards. A timeout is enforced
in the guest (`timeout -s KILL`), so the command does not outlive it there.

Exit codes follow runc: the command's own, or 128+N when signal N ended it; 126/127 when it
could not be run or found.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import secrets
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from virtainer.errors import (
    AgentUnavailableError,
    ConfigError,
    ConflictError,
    NotFoundError,
    VirtainerError,
    WaitTimeout,
)
from virtainer.hypervisor import Hypervisor
from virtainer.validators import check_password

CHUNK = 1 << 20  # bytes per guest-file-read: 1.4 MB of base64 in one agent reply
# ... but a guest-file-write request above ~256 KiB of JSON is refused by QEMU 7.2's agent ("JSON
# parse error") and leaves it deaf for seconds (measured: 160 KiB of data passes, 200 KiB fails)
WRITE_CHUNK = 128 << 10
AGENT_TIMEOUT_S = 30  # one agent call (a chunk of a big file under TCG takes well under that)
BUSY_RETRY_S = 60.0  # how long a busy agent is retried
SYNC_LIMIT_S = 10.0  # libvirt gives up its guest-sync after 5 s, a command after AGENT_TIMEOUT_S
GRACE_S = 30.0  # after the guest-side timeout, how long we wait for the agent to report the exit
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$", re.IGNORECASE)

Stream = Literal["stdout", "stderr"]
OnOutput = Callable[[Stream, bytes], None]
OnProgress = Callable[[int, int | None], None]  # (bytes done, total or None)

# Runs as root in the guest: $1 the private directory, $2 the timeout (0: none), then the command.
# `timeout` makes itself a process group leader; its pid goes to $d/pid so that an interrupted
# exec can kill the whole group. KILL at the deadline also ends `timeout` itself: exit 137.
_RUN = """d=$1; t=$2; shift 2
echo $$ > "$d/pid"
if [ -e "$d/in" ]; then exec <"$d/in"; else exec </dev/null; fi
exec >>"$d/out" 2>>"$d/err"
if [ -n "$VIRTAINER_WORKDIR" ]; then cd "$VIRTAINER_WORKDIR" || exit 126; fi
exec timeout -s KILL "$t" "$@"
"""
# With --user: the command runs under setpriv (no fork, no new session: the timeout still reaches it)
_AS_USER = """u=$1; shift
uid=$(id -u -- "$u") && gid=$(id -g -- "$u") || exit 126
exec setpriv --reuid="$uid" --regid="$gid" --init-groups --reset-env -- "$@"
"""
_SETUP = """umask 077
d=$(mktemp -d /tmp/virtainer-exec.XXXXXXXX) && : >"$d/out" && : >"$d/err" && printf %s "$d"
"""
_CLEANUP = """if [ "$2" = kill ] && [ -s "$1/pid" ]; then kill -KILL -- "-$(cat "$1/pid")" 2>/dev/null; fi
rm -rf -- "$1"
"""


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ExecRequest:
    argv: tuple[str, ...]
    user: str | None = None  # None: root (the agent's user)
    env: tuple[str, ...] = ()  # NAME=value
    timeout_s: float | None = None
    workdir: str | None = None

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise ConfigError("command", list(self.argv), "a command to run in the guest, after --")
        if self.user is not None and not USER_NAME.fullmatch(self.user):
            raise ConfigError("--user", self.user, "a user name of the guest, e.g. debian or root")
        for item in self.env:
            name, equals, _value = item.partition("=")
            if not equals or not ENV_NAME.fullmatch(name) or "\0" in item:
                raise ConfigError("--env", item, "NAME=value, NAME letters, digits and _")
        if self.timeout_s is not None and not 0 < self.timeout_s <= 7 * 86400:
            raise ConfigError("--timeout", self.timeout_s, "seconds, more than 0 and at most a week")
        if any("\0" in arg for arg in self.argv) or (self.workdir and "\0" in self.workdir):
            raise ConfigError("command", list(self.argv), "arguments without NUL characters")


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    signal: int | None  # the signal that ended the command, if one did
    timed_out: bool  # killed in the guest at --timeout
    elapsed_s: float


@dataclass(frozen=True)
class CapturedExec:
    result: ExecResult
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    bytes: int
    elapsed_s: float


@dataclass(frozen=True)
class GuestUser:
    name: str
    domain: str = ""
    login_time: float | None = None  # Unix time


@dataclass(frozen=True)
class GuestFilesystem:
    mountpoint: str
    device: str
    fstype: str
    total_bytes: int | None
    used_bytes: int | None


@dataclass(frozen=True)
class GuestInterface:
    name: str
    mac: str
    addresses: tuple[str, ...]  # address/prefix, IPv4 and IPv6


@dataclass(frozen=True)
class GuestFacts:
    agent_version: str = ""
    os_id: str = ""
    os_name: str = ""
    os_version: str = ""
    os_version_id: str = ""
    os_pretty_name: str = ""
    kernel_release: str = ""
    kernel_version: str = ""
    machine: str = ""
    hostname: str = ""
    timezone: str = ""
    timezone_offset_s: int | None = None
    users: tuple[GuestUser, ...] = ()
    filesystems: tuple[GuestFilesystem, ...] = ()
    interfaces: tuple[GuestInterface, ...] = ()


# ---------------------------------------------------------------------------------------------
# the agent, one call at a time


@dataclass
class _Agent:
    hv: Hypervisor
    name: str

    def call(self, execute: str, arguments: dict[str, Any]) -> Any:
        command = {"execute": execute, "arguments": arguments}
        return _patiently(lambda: self.hv.agent_command(self.name, command, AGENT_TIMEOUT_S))

    def spawn(self, argv: list[str], env: list[str], *, capture: bool = False) -> int:
        reply = self.call("guest-exec", {"path": argv[0], "arg": argv[1:], "env": env, "capture-output": capture})
        return int(reply["pid"])

    def status(self, pid: int) -> dict[str, Any]:
        reply: dict[str, Any] = self.call("guest-exec-status", {"pid": pid})
        return reply

    def wait(self, pid: int, deadline: float) -> dict[str, Any]:
        pause = threading.Event()
        interval = 0.02
        while not (status := self.status(pid))["exited"]:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"the guest agent of '{self.name}' did not report the end of a helper command")
            pause.wait(interval)
            interval = min(interval * 2, 0.5)
        return status

    def shell(self, script: str, *args: str, timeout_s: float = 60.0) -> tuple[int, bytes, bytes]:
        """A short helper script as root with its output captured (small outputs only)."""
        pid = self.spawn(["/bin/sh", "-c", script, "sh", *args], _base_env(), capture=True)
        status = self.wait(pid, time.monotonic() + timeout_s)
        out = base64.b64decode(status.get("out-data", ""))
        err = base64.b64decode(status.get("err-data", ""))
        return _exit_code(status), out, err

    def open(self, path: str, mode: str) -> int:
        return int(self.call("guest-file-open", {"path": path, "mode": mode}))

    def read(self, handle: int, count: int = CHUNK) -> bytes:
        reply = self.call("guest-file-read", {"handle": handle, "count": count})
        return base64.b64decode(reply.get("buf-b64", "")) if reply.get("count") else b""

    def write(self, handle: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            piece = base64.b64encode(view[:WRITE_CHUNK]).decode()
            reply = self.call("guest-file-write", {"handle": handle, "buf-b64": piece})
            written = int(reply.get("count", 0))
            if written <= 0:
                raise ConflictError(f"the guest agent of '{self.name}' wrote nothing (guest disk full?)")
            view = view[written:]

    def close(self, handle: int) -> None:
        with contextlib.suppress(Exception):
            self.call("guest-file-close", {"handle": handle})


T = TypeVar("T")


def _patiently(call: Callable[[], T]) -> T:
    """Retry while the agent is busy (a loaded TCG guest misses libvirt's 5 s guest-sync now and
    then, measured). libvirt says the same when the command itself timed out, so only a failure
    well before AGENT_TIMEOUT_S counts: the command was never sent, retrying cannot run it twice."""
    deadline = time.monotonic() + BUSY_RETRY_S
    pause = threading.Event()
    while True:
        started = time.monotonic()
        try:
            return call()
        except AgentUnavailableError as error:
            in_sync = time.monotonic() - started < SYNC_LIMIT_S
            if not (error.busy and in_sync) or time.monotonic() > deadline:
                raise
        pause.wait(0.5)


def _base_env(home: str = "/root") -> list[str]:
    return [f"PATH={GUEST_PATH}", f"HOME={home}", "LANG=C.UTF-8"]


def _exit_code(status: dict[str, Any]) -> int:
    if "signal" in status:
        return 128 + int(status["signal"])
    return int(status.get("exitcode", 0))


# ---------------------------------------------------------------------------------------------
# exec


def run(
    hv: Hypervisor,
    name: str,
    request: ExecRequest,
    on_output: OnOutput,
    *,
    stdin: IO[bytes] | bytes | None = None,
    on_upload: OnProgress | None = None,
    cancel: threading.Event | None = None,
) -> ExecResult:
    """Run request.argv in the guest; on_output gets stdout and stderr as they arrive. Setting
    `cancel` (or an exception in on_output) kills the command in the guest."""
    agent = _Agent(hv, name)
    started = time.monotonic()
    with _agent_needed(hv, name, "exec"):
        code, out, err = agent.shell(_SETUP)
    if code != 0 or not out.startswith(b"/tmp/virtainer-exec."):
        raise ConflictError(f"cannot make a temporary directory in '{name}': {err.decode(errors='replace').strip()}")
    directory = out.decode()
    finished = False
    try:
        if stdin is not None:
            _upload(agent, f"{directory}/in", stdin, on_upload)
        pid = agent.spawn(*_command_line(request, directory))
        status = _pump(agent, directory, pid, on_output, request.timeout_s, cancel or threading.Event())
        finished = True
    finally:
        with contextlib.suppress(Exception):  # best effort: the VM may be gone meanwhile
            cleanup = ["/bin/sh", "-c", _CLEANUP, "sh", directory, "done" if finished else "kill"]
            # waited for: the agent keeps every exec's status until it is asked for once
            agent.wait(agent.spawn(cleanup, _base_env()), time.monotonic() + 10)
    elapsed = time.monotonic() - started
    signal = int(status["signal"]) if "signal" in status else None
    timed_out = request.timeout_s is not None and signal == 9 and elapsed >= request.timeout_s
    return ExecResult(_exit_code(status), signal, timed_out, round(elapsed, 3))


def run_captured(hv: Hypervisor, name: str, request: ExecRequest, stdin: bytes | None = None) -> CapturedExec:
    chunks: dict[Stream, list[bytes]] = {"stdout": [], "stderr": []}
    result = run(hv, name, request, lambda stream, data: chunks[stream].append(data), stdin=stdin)
    return CapturedExec(result, b"".join(chunks["stdout"]), b"".join(chunks["stderr"]))


def _command_line(request: ExecRequest, directory: str) -> tuple[list[str], list[str]]:
    argv = list(request.argv)
    env = _base_env()
    if request.user is not None and request.user != "root":
        # setpriv --reset-env clears the environment: the user's variables are set after it
        prefix = ["/bin/sh", "-c", _AS_USER, "sh", request.user]
        argv = [*prefix, *(["env", "--", *request.env] if request.env else []), *argv]
    else:
        env += list(request.env)
    if request.workdir:
        env.append(f"VIRTAINER_WORKDIR={request.workdir}")
    timeout = f"{request.timeout_s:g}" if request.timeout_s else "0"
    return ["/bin/sh", "-c", _RUN, "sh", directory, timeout, *argv], env


def _pump(
    agent: _Agent, directory: str, pid: int, on_output: OnOutput, timeout_s: float | None, cancel: threading.Event
) -> dict[str, Any]:
    """Relay the output files until the command exited and both files are read to their end."""
    handles: dict[Stream, int] = {}
    try:
        handles["stdout"] = agent.open(f"{directory}/out", "r")
        handles["stderr"] = agent.open(f"{directory}/err", "r")
        deadline = time.monotonic() + timeout_s + GRACE_S if timeout_s else None
        interval = 0.05
        while True:
            status = agent.status(pid)
            moved = _relay(agent, handles, on_output)
            if status["exited"]:
                while _relay(agent, handles, on_output):  # what it wrote before it exited
                    pass
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"the command in '{agent.name}' did not end {GRACE_S:.0f} s after its timeout")
            if cancel.is_set():
                raise ConflictError(f"the command in '{agent.name}' was cancelled and killed in the guest")
            if not moved:
                cancel.wait(interval)
            interval = 0.05 if moved else min(interval * 1.5, 0.5)
    finally:
        for handle in handles.values():
            agent.close(handle)


def _relay(agent: _Agent, handles: dict[Stream, int], on_output: OnOutput) -> int:
    moved = 0
    for stream, handle in handles.items():
        while data := agent.read(handle):
            moved += len(data)
            on_output(stream, data)
            if len(data) < CHUNK:
                break
    return moved


def _upload(agent: _Agent, path: str, source: IO[bytes] | bytes, on_progress: OnProgress | None) -> int:
    stream: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
    total = _size_of(stream)
    handle = agent.open(path, "w")
    done = 0
    try:
        while chunk := stream.read(WRITE_CHUNK):
            agent.write(handle, chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
    finally:
        agent.close(handle)
    if on_progress:
        on_progress(done, done)
    return done


def _size_of(stream: IO[bytes]) -> int | None:
    if isinstance(stream, io.BytesIO):
        return len(stream.getbuffer())
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


# ---------------------------------------------------------------------------------------------
# the agent is missing: one line, and what to use instead


@contextlib.contextmanager
def _agent_needed(hv: Hypervisor, name: str, operation: str) -> Iterator[None]:
    try:
        yield
    except AgentUnavailableError as error:
        raise AgentUnavailableError(
            f"{error.message}: {operation} cannot run in it", hint=f"use {fallback(hv, name)}"
        ) from None


def fallback(hv: Hypervisor, name: str) -> str:
    """SSH when the guest answers on port 22, else its serial console."""
    from virtainer.readiness import ReadinessProbe

    user = hv.metadata(name).get("user") or "root"
    with contextlib.suppress(VirtainerError):
        for address in hv.addresses(name):
            if ReadinessProbe.ssh(address.address):
                return f"SSH: ssh {user}@{address.address}, or virtainer ssh {name}"
    return f"the serial console: virtainer console {name}"


# ---------------------------------------------------------------------------------------------
# copy


def guest_path(value: str, setting: str = "path") -> str:
    if not value.startswith("/") or "\0" in value or "\n" in value:
        raise ConfigError(setting, value, "an absolute path in the guest, e.g. vm:/home/debian/file")
    return value.rstrip("/") or "/"


# In the guest, as the exec user: refuse to overwrite; unpack next to the target, then rename.
_UNPACK = """set -e
dest=$1 base=$2
if [ -d "$dest" ]; then dest=$dest/$base; fi
if [ -e "$dest" ] || [ -L "$dest" ]; then echo "virtainer: $dest exists" >&2; exit 17; fi
parent=$(dirname -- "$dest")
[ -d "$parent" ] || { echo "virtainer: no directory $parent" >&2; exit 2; }
t=$(mktemp -d "$parent/.virtainer-cp.XXXXXX")
trap 'rm -rf -- "$t"' EXIT
tar -x -p --no-same-owner -C "$t" -f -
mv -T -- "$t/$base" "$dest"
"""
_PACK = """set -e
[ -e "$1" ] || { echo "virtainer: no such file or directory $1" >&2; exit 2; }
if [ "$2" = size ]; then du -s -b -- "$1" | cut -f1; exit 0; fi
cd -- "$(dirname -- "$1")"
exec tar -c -f - -- "$(basename -- "$1")"
"""


def copy_in(
    hv: Hypervisor,
    name: str,
    source: Path,
    dest: str,
    *,
    user: str | None = None,
    on_progress: OnProgress | None = None,
) -> CopyResult:
    """Copy a host file or directory into the guest (a tar stream through the agent, modes kept)."""
    dest = guest_path(dest, "destination")
    if not source.exists() and not source.is_symlink():
        raise NotFoundError(f"no such file or directory: {source}")
    started = time.monotonic()
    base = source.resolve().name if source.name in ("", ".", "..") else source.name
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(str(source), arcname=base)
        size = archive.tell()
        archive.seek(0)
        request = ExecRequest(("/bin/sh", "-c", _UNPACK, "sh", dest, base), user=user)
        done = _run_helper(hv, name, request, "cp", stdin=archive, on_upload=on_progress)
    _refuse_on_failure(done, dest)
    return CopyResult(str(source), f"{name}:{dest}", size, round(time.monotonic() - started, 3))


def copy_out(
    hv: Hypervisor,
    name: str,
    source: str,
    dest: Path,
    *,
    user: str | None = None,
    on_progress: OnProgress | None = None,
) -> CopyResult:
    """Copy a guest file or directory to the host; an existing destination is never overwritten."""
    source = guest_path(source, "source")
    if source == "/":
        raise ConfigError("source", source, "a file or directory below / in the guest")
    started = time.monotonic()
    sized = _run_helper(hv, name, ExecRequest(("/bin/sh", "-c", _PACK, "sh", source, "size"), user=user), "cp")
    _refuse_on_failure(sized, source)
    total = int(sized.stdout.strip() or 0)
    base = source.rsplit("/", 1)[-1]
    target = dest / base if dest.is_dir() else dest
    if target.exists() or target.is_symlink():
        raise ConflictError(f"{target} exists", hint="remove it or choose another destination")
    if not target.parent.is_dir():
        raise NotFoundError(f"no directory {target.parent}")
    staging = Path(tempfile.mkdtemp(prefix=".virtainer-cp.", dir=target.parent))
    try:
        with tempfile.TemporaryFile(dir=staging) as archive:
            received = 0

            def collect(stream: Stream, data: bytes) -> None:
                nonlocal received
                if stream == "stdout":
                    archive.write(data)
                    received += len(data)
                    if on_progress:
                        on_progress(min(received, total), total)
                else:
                    errors.append(data)

            errors: list[bytes] = []
            request = ExecRequest(("/bin/sh", "-c", _PACK, "sh", source, "archive"), user=user)
            with _agent_needed(hv, name, "cp"):
                result = run(hv, name, request, collect)
            _refuse_on_failure(CapturedExec(result, b"", b"".join(errors)), source)
            if on_progress:
                on_progress(total, total)
            archive.seek(0)
            _extract(archive, staging, base)
        (staging / base).rename(target)
    finally:
        _remove_tree(staging)
    return CopyResult(f"{name}:{source}", str(target), received, round(time.monotonic() - started, 3))


def _run_helper(hv: Hypervisor, name: str, request: ExecRequest, operation: str, **options: Any) -> CapturedExec:
    chunks: dict[Stream, list[bytes]] = {"stdout": [], "stderr": []}
    with _agent_needed(hv, name, operation):
        result = run(hv, name, request, lambda stream, data: chunks[stream].append(data), **options)
    return CapturedExec(result, b"".join(chunks["stdout"]), b"".join(chunks["stderr"]))


def _refuse_on_failure(done: CapturedExec, path: str) -> None:
    if done.result.exit_code == 0:
        return
    message = done.stderr.decode(errors="replace").strip().splitlines()
    text = message[-1].removeprefix("virtainer: ") if message else f"exit code {done.result.exit_code}"
    if done.result.exit_code == 17:
        raise ConflictError(text, hint="remove it or choose another destination")
    if done.result.exit_code == 2 and text.startswith("no "):
        raise NotFoundError(f"in the guest: {text}")
    raise ConflictError(f"copy of {path} failed in the guest: {text}")


def _extract(archive: IO[bytes], staging: Path, base: str) -> None:
    """Unpack what the guest sent into an empty staging directory, treating it as hostile: one
    top-level entry named `base`, each name once, nothing outside, nothing below a symlink, no
    device files, no hard links leaving the tree, no setuid/setgid bits. Modes are kept otherwise
    (Python's "tar" filter would drop group/other write bits)."""
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        members = tar.getmembers()
        names = [Path(member.name) for member in members]
        symlinks = {Path(member.name) for member in members if member.issym()}
        if len(set(names)) != len(names):
            raise ConflictError("the guest sent an archive with a name twice; nothing was copied")
        for member, path in zip(members, names, strict=True):
            if not path.parts or path.parts[0] != base or member.name.startswith("/") or ".." in path.parts:
                raise ConflictError(f"the guest sent an unexpected entry {member.name!r}; nothing was copied")
            if any(parent in symlinks for parent in path.parents):
                raise ConflictError(f"the guest sent an entry below a symlink {member.name!r}; nothing was copied")
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                raise ConflictError(f"the guest sent a special file {member.name!r}; nothing was copied")
            link = Path(member.linkname)
            if member.islnk() and (link.parts[:1] != (base,) or ".." in link.parts or link in symlinks):
                raise ConflictError(f"the guest sent a hard link leaving the tree {member.name!r}")
            member.mode &= 0o1777
            member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        if hasattr(tarfile, "fully_trusted_filter"):
            tar.extractall(staging, members=members, filter="fully_trusted")  # checked above
        else:  # Python without extraction filters (Debian 12's 3.11.2, in the container)
            tar.extractall(staging, members=members)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# SSH keys and passwords


def check_key(key: str) -> str:
    key = key.strip()
    fields = key.split()
    kinds = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")
    if "\n" in key or len(fields) < 2 or not fields[0].startswith(kinds) or len(key) > 16384:
        raise ConfigError("KEY", key[:40], "an OpenSSH public key (ssh-ed25519 AAAA... comment) or a .pub file")
    return key


def list_keys(hv: Hypervisor, name: str, user: str) -> list[str]:
    with _agent_needed(hv, name, "keys list"):
        return _patiently(lambda: hv.authorized_keys(name, _check_user(user)))


def add_keys(hv: Hypervisor, name: str, user: str, keys: list[str]) -> list[str]:
    """Append the keys (those not there yet) to the user's authorized_keys; returns the list."""
    wanted = [check_key(key) for key in keys]
    with _agent_needed(hv, name, "keys add"):
        present = _patiently(lambda: hv.authorized_keys(name, _check_user(user)))
        missing = [key for key in dict.fromkeys(wanted) if key not in present]
        if missing:
            _patiently(lambda: hv.change_authorized_keys(name, user, missing, remove=False))
        return _patiently(lambda: hv.authorized_keys(name, user))


def remove_keys(hv: Hypervisor, name: str, user: str, keys: list[str]) -> list[str]:
    wanted = [check_key(key) for key in keys]
    with _agent_needed(hv, name, "keys remove"):
        present = _patiently(lambda: hv.authorized_keys(name, _check_user(user)))
        # match on type and key material: the comment may differ
        material = {tuple(key.split()[:2]) for key in wanted}
        found = [key for key in present if tuple(key.split()[:2]) in material]
        if found:
            _patiently(lambda: hv.change_authorized_keys(name, user, found, remove=True))
        return _patiently(lambda: hv.authorized_keys(name, user))


def set_password(hv: Hypervisor, name: str, user: str, password: str | None = None) -> str:
    """Set the user's password in the guest; random (printable, 20 characters) unless given."""
    password = password if password is not None else secrets.token_urlsafe(15)
    check_password(password)
    with _agent_needed(hv, name, "password"):
        _patiently(lambda: hv.set_user_password(name, _check_user(user), password))
    return password


def _check_user(user: str) -> str:
    if not USER_NAME.fullmatch(user):
        raise ConfigError("--user", user, "a user name of the guest, e.g. debian or root")
    return user


# ---------------------------------------------------------------------------------------------
# facts


def agent_version(hv: Hypervisor, name: str, timeout_s: int = 5) -> str:
    reply = hv.agent_command(name, {"execute": "guest-info"}, timeout_s)
    return str(reply.get("version", "")) if isinstance(reply, dict) else ""


def facts(hv: Hypervisor, name: str, *, patient: bool = True) -> GuestFacts:
    """What the agent says about the guest: OS, kernel, hostname, users, filesystems, time zone,
    interfaces (libvirt's guestInfo), and the agent's version. Not patient: a busy agent fails
    at once (a status read must not wait)."""

    def ask(call: Callable[[], T]) -> T:
        return _patiently(call) if patient else call()

    with _agent_needed(hv, name, "guest facts"):
        version = ask(lambda: agent_version(hv, name))
        info = ask(lambda: hv.guest_info(name))
    return parse_guest_info(info, version)


def parse_guest_info(info: dict[str, Any], version: str = "") -> GuestFacts:
    """libvirt's flat typed parameters ("fs.0.mountpoint", ...) as dataclasses."""

    def text(key: str) -> str:
        return str(info.get(key, ""))

    def number(key: str) -> int | None:
        value = info.get(key)
        return int(value) if isinstance(value, int | float) else None

    def count(prefix: str) -> range:
        return range(number(f"{prefix}.count") or 0)

    users = tuple(
        GuestUser(
            text(f"user.{i}.name"), text(f"user.{i}.domain"),
            (login / 1000 if (login := number(f"user.{i}.login-time")) is not None else None),
        )
        for i in count("user")
    )  # fmt: skip
    filesystems = tuple(
        GuestFilesystem(
            text(f"fs.{i}.mountpoint"), text(f"fs.{i}.name"), text(f"fs.{i}.fstype"),
            number(f"fs.{i}.total-bytes"), number(f"fs.{i}.used-bytes"),
        )
        for i in count("fs")
    )  # fmt: skip
    interfaces = tuple(
        GuestInterface(
            text(f"if.{i}.name"), text(f"if.{i}.hwaddr"),
            tuple(f"{text(f'if.{i}.addr.{j}.addr')}/{text(f'if.{i}.addr.{j}.prefix')}" for j in count(f"if.{i}.addr")),
        )
        for i in count("if")
    )  # fmt: skip
    return GuestFacts(
        agent_version=version,
        os_id=text("os.id"),
        os_name=text("os.name"),
        os_version=text("os.version"),
        os_version_id=text("os.version-id"),
        os_pretty_name=text("os.pretty-name"),
        kernel_release=text("os.kernel-release"),
        kernel_version=text("os.kernel-version"),
        machine=text("os.machine"),
        hostname=text("hostname"),
        timezone=text("timezone.name"),
        timezone_offset_s=number("timezone.offset"),
        users=users,
        filesystems=filesystems,
        interfaces=interfaces,
    )
