"""The rest of runc's contract, one bullet per test: --env-file and the image's USER, docker commit
and docker diff, docker logs and -a keeping the streams apart, docker kill -s, the lifecycle verbs
one by one without Docker, and a runtime tree or guest kernel that is missing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.container.docker import docker
from tests.runtime.common import VM_TIMEOUT_S, removed_after, same_as_runc, unique
from tests.waiting import wait_until
from virtainer.runtime.plan import KERNEL

pytestmark = pytest.mark.runtime


def test_commit_diff_env_file_and_the_images_user_as_with_runc(
    runtime: str, images: dict[str, str], tmp_path: Path
) -> None:
    script = "echo committed > /made; mkdir -p /etc/more; echo x > /etc/more/file; rm /bin/yes"
    diffs = []
    with removed_after(unique("commit-runc")) as reference, removed_after(unique("commit")) as name:
        for chosen, container in (([], reference), ([f"--runtime={runtime}"], name)):
            docker("run", *chosen, "--name", container, images["busybox"], "sh", "-c", script, timeout=VM_TIMEOUT_S)
            diffs.append(sorted(docker("diff", container).stdout.splitlines()))
        assert diffs[1] == diffs[0]
        assert {"A /made", "D /bin/yes", "A /etc/more/file"} <= set(diffs[1])
        tag = f"{unique('committed')}:latest"
        docker("commit", "--change", "USER 1234:2345", name, tag)
    try:
        env_file = tmp_path / "env"
        env_file.write_text("# a comment\nFROM_FILE=yes it is\n")
        script = 'cat /made; id -u; id -g; echo "$FROM_FILE"'
        done = same_as_runc(runtime, "--env-file", str(env_file), tag, "sh", "-c", script)
        assert done.stdout.splitlines() == ["committed", "1234", "2345", "yes it is"]
    finally:
        docker("rmi", tag, check=False)


def test_docker_logs_keeps_streams_apart_and_kill_s_delivers_the_signal(runtime: str, images: dict[str, str]) -> None:
    script = (
        "trap 'echo usr1-out; echo usr1-err >&2; exit 9' USR1;"
        " echo ready; echo ready-err >&2; while :; do sleep 0.2; done"
    )
    with removed_after(unique("logs")) as name:
        docker("run", "-d", f"--runtime={runtime}", "--name", name, images["busybox"], "sh", "-c", script)
        wait_until(lambda: "ready" in docker("logs", name).stdout, VM_TIMEOUT_S, "the first line in docker logs")
        docker("kill", "-s", "USR1", name)

        def stopped() -> bool:
            return docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "false"

        wait_until(stopped, VM_TIMEOUT_S, "the container to end after SIGUSR1")
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "9"
        logs = docker("logs", name)
        assert (logs.stdout, logs.stderr) == ("ready\nusr1-out\n", "ready-err\nusr1-err\n")


def test_attach_to_stderr_only_as_with_runc(runtime: str, images: dict[str, str]) -> None:
    done = same_as_runc(runtime, "-a", "stderr", images["busybox"], "sh", "-c", "echo out; echo err >&2; exit 2")
    assert (done.stdout, done.stderr, done.returncode) == ("", "err\n", 2)


# -- without Docker: runc's verbs on a bundle ------------------------------------------------------


def oci(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    from tests.runtime.conftest import RUNTIME_EXE

    return subprocess.run([str(RUNTIME_EXE), *args], cwd=cwd, text=True, timeout=VM_TIMEOUT_S, check=False,
                          **kwargs)  # type: ignore[call-overload]  # fmt: skip


def exported_bundle(image: str, bundle: Path, args: list[str]) -> None:
    """runvm's way: `docker export` into rootfs/, `spec`, the command set in config.json."""
    (bundle / "rootfs").mkdir()
    with removed_after(unique("export")) as name:
        docker("create", "--name", name, image)
        export = subprocess.run(["docker", "export", name], capture_output=True, check=True, timeout=120)
    subprocess.run(["tar", "-x", "-C", str(bundle / "rootfs")], input=export.stdout, check=True, timeout=120)
    assert oci("spec", cwd=bundle).returncode == 0
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(terminal=False, args=args)
    (bundle / "config.json").write_text(json.dumps(config))


def status(state: Path, container: str, bundle: Path) -> str:
    done = oci("--root", str(state), "state", container, cwd=bundle, capture_output=True)
    return str(json.loads(done.stdout)["status"]) if done.returncode == 0 else f"gone: {done.stderr.strip()}"


def test_lifecycle_verbs_one_by_one_without_docker(runtime: str, images: dict[str, str], host_dir: Path) -> None:
    script = "trap 'echo got-term; exit 3' TERM; echo started; while :; do sleep 0.2; done"
    exported_bundle(images["busybox"], host_dir, ["sh", "-c", script])
    state, container = host_dir / "state", unique("verbs")
    out, err = host_dir / "out", host_dir / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        created = oci("--root", str(state), "create", "--bundle", str(host_dir), container, cwd=host_dir,
                      stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)  # fmt: skip
    try:
        assert created.returncode == 0, err.read_text()
        assert status(state, container, host_dir) == "created"
        assert oci("--root", str(state), "start", container, cwd=host_dir).returncode == 0
        wait_until(lambda: "started" in out.read_text(), VM_TIMEOUT_S, "the command to start in the VM")
        assert status(state, container, host_dir) == "running"
        assert oci("--root", str(state), "kill", container, "TERM", cwd=host_dir).returncode == 0
        wait_until(lambda: status(state, container, host_dir) == "stopped", VM_TIMEOUT_S, "the container to stop")
        assert out.read_text() == "started\ngot-term\n"
    finally:
        deleted = oci("--root", str(state), "delete", "--force", container, cwd=host_dir, capture_output=True)
    assert deleted.returncode == 0, deleted.stderr
    assert status(state, container, host_dir).startswith("gone")


def broken_cache(cache: Path, missing: str) -> None:
    """A runtime cache at `cache` like the real one, but its tree lacks virtiofsd or its guest the kernel."""
    from virtainer.runtime import artifacts

    real_tree, real_guest = artifacts.tree_dir(), artifacts.guest_dir()
    os.environ["VIRTAINER_RUNTIME_CACHE"] = str(cache)
    try:
        tree, guest = artifacts.tree_dir(), artifacts.guest_dir()
    finally:
        del os.environ["VIRTAINER_RUNTIME_CACHE"]
    tree.mkdir(parents=True)
    guest.mkdir()
    for source, dest in ((real_tree, tree), (real_guest, guest)):
        for entry in source.iterdir():
            if entry.name not in ("usr", KERNEL):
                (dest / entry.name).symlink_to(entry)
    if missing != "virtiofsd":
        (tree / "usr").symlink_to(real_tree / "usr")
    else:
        (tree / "usr" / "bin").mkdir(parents=True)
        qemu = Path("usr/bin/qemu-system-x86_64")
        (tree / qemu).symlink_to(real_tree / qemu)
    if missing != "kernel":
        (guest / KERNEL).symlink_to(real_guest / KERNEL)


@pytest.mark.parametrize("missing", ["virtiofsd", "kernel"])
def test_missing_virtiofsd_or_kernel_is_one_line_and_leaves_nothing(
    runtime: str, images: dict[str, str], host_dir: Path, missing: str
) -> None:
    broken_cache(host_dir / "cache", missing)
    bundle = host_dir / "bundle"
    bundle.mkdir()
    exported_bundle(images["busybox"], bundle, ["true"])
    before = sorted(path.name for path in bundle.iterdir())
    config = (bundle / "config.json").read_bytes()
    state = host_dir / "state"
    env = {**os.environ, "VIRTAINER_RUNTIME_CACHE": str(host_dir / "cache")}
    done = oci("--root", str(state), "run", unique("missing"), cwd=bundle, capture_output=True,
               stdin=subprocess.DEVNULL, env=env)  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    expected = "lacks /usr/lib/qemu/virtiofsd" if missing == "virtiofsd" else f"lacks {KERNEL}"
    assert len(lines) == 1 and expected in lines[0] and "virtainer runtime install --rebuild" in lines[0], lines
    assert (bundle / "config.json").read_bytes() == config
    assert sorted(path.name for path in bundle.iterdir()) == before
    assert not state.exists() or not any(state.iterdir())
