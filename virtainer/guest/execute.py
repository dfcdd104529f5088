"""Run a command in the guest through its agent, its output relayed while it runs.

The agent's own `guest-exec` output capture is capped (16 MiB in QEMU 7) and handed over only at
exit, so a command here runs with stdout and stderr redirected to files in a private temporary
directory of the guest, which are read while it runs (`guest-file-read`, base64) and removed
afterwards. A timeout is enforced in the guest (`timeout -s KILL`), so the command does not
outlive it there.

Exit codes follow runc: the command's own, or 128+N when signal N ended it; 126/127 when it
could not be run or found.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal

from virtainer.errors import ConfigError, ConflictError, WaitTimeout
from virtainer.guest.agent import CHUNK, USER_NAME, WRITE_CHUNK, _Agent, _agent_needed, _base_env, _exit_code
from virtainer.hypervisor import Domain

GRACE_S = 30.0  # after the guest-side timeout, how long we wait for the agent to report the exit
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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


# ---------------------------------------------------------------------------------------------
# exec


def run(
    dom: Domain,
    request: ExecRequest,
    on_output: OnOutput,
    *,
    stdin: IO[bytes] | bytes | None = None,
    on_upload: OnProgress | None = None,
    cancel: threading.Event | None = None,
) -> ExecResult:
    """Run request.argv in the guest; on_output gets stdout and stderr as they arrive. Setting
    `cancel` (or an exception in on_output) kills the command in the guest."""
    agent = _Agent(dom)
    started = time.monotonic()
    with _agent_needed(dom, "exec"):
        code, out, err = agent.shell(_SETUP)
    if code != 0 or not out.startswith(b"/tmp/virtainer-exec."):
        raise ConflictError(
            f"cannot make a temporary directory in '{dom.name}': {err.decode(errors='replace').strip()}"
        )
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


def run_captured(dom: Domain, request: ExecRequest, stdin: bytes | None = None) -> CapturedExec:
    chunks: dict[Stream, list[bytes]] = {"stdout": [], "stderr": []}
    result = run(dom, request, lambda stream, data: chunks[stream].append(data), stdin=stdin)
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
