"""What the runtime tests share: docker run with stdout and stderr kept apart, runc as the reference."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator

from tests.container.docker import docker

VM_TIMEOUT_S = 240  # one boot under TCG on a loaded 2-core machine; typically 10-25 s


def unique(label: str) -> str:
    return f"vt-rtest-{label}-{uuid.uuid4().hex[:6]}"


def run(*args: str, runtime: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`docker run --rm [--runtime=R] ARGS`, stdout and stderr kept apart."""
    command = ["docker", "run", "--rm", *([f"--runtime={runtime}"] if runtime else []), *args]
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=VM_TIMEOUT_S, check=False,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip


def same_as_runc(runtime: str, *args: str) -> subprocess.CompletedProcess[str]:
    vm = run(*args, runtime=runtime)
    reference = run(*args)
    assert (vm.stdout, vm.returncode) == (reference.stdout, reference.returncode), vm.stderr
    assert vm.stderr == reference.stderr
    return vm


@contextlib.contextmanager
def removed_after(name: str) -> Iterator[str]:
    """The container (and its anonymous volumes) removed at the end, whatever happened."""
    try:
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)
