"""`-t`: docker run -it and docker exec -it get a terminal in the VM, window resizes included.

runc's console socket protocol (the pty master sent over --console-socket with SCM_RIGHTS) stays
runc's: the launcher is the container's process on that pty, puts it in raw mode and relays it to a
pty in the guest, whose size follows SIGWINCH. Each check runs under runc and under the runtime.
"""

from __future__ import annotations

import subprocess
import time

import pexpect
import pytest

from tests.container.docker import docker
from tests.runtime.common import VM_TIMEOUT_S, removed_after, unique
from tests.waiting import wait_until

pytestmark = pytest.mark.runtime
PROMPT = r"[#$] "
FIRST_SIZE = (30, 90)
RESIZED = (41, 101)


def spawn(*docker_args: str) -> pexpect.spawn:
    return pexpect.spawn("docker", list(docker_args), dimensions=FIRST_SIZE, timeout=VM_TIMEOUT_S, encoding="utf-8")


def window_size_seen(shell: pexpect.spawn, rows: int, cols: int) -> bool:
    """Ask the shell its terminal's size until it says rows x cols (a resize travels a while)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shell.sendline("stty size")
        if shell.expect([rf"\r\n{rows} {cols}\r\n", r"\r\n\d+ \d+\r\n"], timeout=30) == 0:
            return True
    return False


def check_interactive_shell(shell: pexpect.spawn) -> tuple[int | None, str]:
    """A prompt, a tty, the first window size, a resize, then `exit 5`: the exit status and `tty`."""
    shell.expect(PROMPT)
    shell.sendline("tty")
    shell.expect(r"(/dev/\S+)\r\n")
    tty_name = str(shell.match.group(1))
    assert window_size_seen(shell, *FIRST_SIZE)
    shell.setwinsize(*RESIZED)
    assert window_size_seen(shell, *RESIZED), "the window resize did not reach the shell"
    shell.sendline("exit 5")
    shell.expect(pexpect.EOF)
    shell.close()
    return shell.exitstatus, tty_name


@pytest.mark.parametrize("with_vm", [False, True], ids=["runc", "vm"])
def test_docker_run_it_with_window_resize(runtime: str, images: dict[str, str], with_vm: bool) -> None:
    chosen = [f"--runtime={runtime}"] if with_vm else []
    shell = spawn("run", "--rm", "-it", *chosen, images["busybox"], "sh")
    assert check_interactive_shell(shell) == (5, "/dev/pts/0")


def test_docker_run_t_output_as_with_runc(runtime: str, images: dict[str, str]) -> None:
    """Without -i: the terminal's line discipline (CRLF) on both streams, merged, as with runc."""
    args = [images["busybox"], "sh", "-c", 'echo out; echo err >&2; printf "a\\tb\\n"; exit 7']

    def run_t(*chosen: str) -> subprocess.CompletedProcess[bytes]:
        command = ["docker", "run", "--rm", "-t", *chosen, *args]
        return subprocess.run(command, capture_output=True, timeout=VM_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)

    vm, reference = run_t(f"--runtime={runtime}"), run_t()
    assert (vm.stdout, vm.returncode) == (reference.stdout, reference.returncode) == (b"out\r\nerr\r\na\tb\r\n", 7)


@pytest.mark.parametrize("with_vm", [False, True], ids=["runc", "vm"])
def test_docker_exec_it_with_window_resize(runtime: str, images: dict[str, str], with_vm: bool) -> None:
    chosen = [f"--runtime={runtime}"] if with_vm else []
    with removed_after(unique("exec-it")) as name:
        docker("run", "-d", *chosen, "--name", name, images["busybox"], "sleep", "600")

        def answered() -> bool:
            return docker("exec", name, "true", check=False, timeout=VM_TIMEOUT_S).returncode == 0

        wait_until(answered, VM_TIMEOUT_S, "docker exec to answer")
        status, tty_name = check_interactive_shell(spawn("exec", "-it", name, "sh"))
        assert status == 5 and tty_name.startswith("/dev/pts/")
