"""`docker run --runtime=virtainer`: the image's command runs in a VM and behaves as with runc.

Real dockerd, the runtime installed by `virtainer-runtime install`, images built from Debian
packages. Where runc is the reference, the same command runs under both and the results are compared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pexpect
import pytest

from tests.container.docker import docker
from tests.runtime.common import VM_TIMEOUT_S, removed_after, run, same_as_runc, unique
from tests.waiting import wait_until

pytestmark = pytest.mark.runtime


def test_stdout_stderr_and_exit_code_as_with_runc(runtime: str, images: dict[str, str]) -> None:
    done = same_as_runc(runtime, images["debian"], "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (done.stdout, done.stderr, done.returncode) == ("out\n", "err\n", 7)


def test_process_settings_as_with_runc(runtime: str, images: dict[str, str]) -> None:
    script = 'id -u; id -g; pwd; echo "$GREETING"; echo "$0 $1"'
    done = same_as_runc(
        runtime, "-e", "GREETING=hello vm", "-w", "/tmp", "-u", "1000:1001", "--entrypoint", "/bin/sh",
        images["busybox"], "-c", script, "zero", "one",
    )  # fmt: skip
    assert done.stdout.splitlines() == ["1000", "1001", "/tmp", "hello vm", "zero one"]


def test_static_binary_from_scratch_as_with_runc(runtime: str, images: dict[str, str]) -> None:
    done = same_as_runc(runtime, images["static"], "a", "b")
    assert (done.stdout, done.returncode) == ("hello from a static binary, 2 args\n", 3)


def test_hostname_and_writes_land_in_the_container_layer(runtime: str, images: dict[str, str]) -> None:
    with removed_after(unique("layer")) as name:
        done = subprocess.run(
            ["docker", "run", f"--runtime={runtime}", "--name", name, "--hostname", "vm-host", images["busybox"],
             "sh", "-c", "hostname; grep -c vm-host /etc/hosts; echo from-the-vm > /created; rm /bin/yes"],
            capture_output=True, text=True, timeout=VM_TIMEOUT_S, check=False,
        )  # fmt: skip
        assert (done.stdout, done.returncode) == ("vm-host\n1\n", 0), done.stderr
        diff = set(docker("diff", name).stdout.splitlines())
        assert {"A /created", "D /bin/yes"} <= diff
        copied = docker("cp", f"{name}:/created", "-").stdout
        assert "from-the-vm" in copied


def test_default_hostname_is_the_container_id(runtime: str, images: dict[str, str]) -> None:
    with removed_after(unique("hostname")) as name:
        done = subprocess.run(
            ["docker", "run", f"--runtime={runtime}", "--name", name, images["busybox"], "hostname"],
            capture_output=True, text=True, timeout=VM_TIMEOUT_S, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == docker("inspect", "-f", "{{.Config.Hostname}}", name).stdout.strip()


def test_nothing_written_before_exit_is_lost(runtime: str, images: dict[str, str]) -> None:
    done = run(images["busybox"], "sh", "-c", "seq 1 40000; seq 1 30000 >&2; exit 5", runtime=runtime)
    assert done.returncode == 5
    assert done.stdout.splitlines() == [str(n) for n in range(1, 40001)]
    assert done.stderr.splitlines() == [str(n) for n in range(1, 30001)]


def test_stdin_with_i(runtime: str, images: dict[str, str]) -> None:
    done = run("-i", images["busybox"], "sh", "-c", "cat; echo done", runtime=runtime, stdin="line one\nline two\n")
    assert (done.stdout, done.returncode) == ("line one\nline two\ndone\n", 0), done.stderr


def test_death_by_signal_is_128_plus_n(runtime: str, images: dict[str, str]) -> None:
    # in the VM the command is not PID 1, so it dies of its own SIGTERM as a process on a host does
    done = run(images["busybox"], "sh", "-c", "kill -TERM $$", runtime=runtime)
    assert done.returncode == 128 + 15, done.stderr


def test_volumes_rw_and_ro_and_tmpfs(runtime: str, images: dict[str, str], host_dir: Path) -> None:
    (host_dir / "rw").mkdir()
    (host_dir / "ro").mkdir()
    (host_dir / "ro" / "given").write_text("from the host\n")
    script = "cat /ro/given; echo from-vm > /rw/made; echo x > /ro/refused || echo refused"
    script += "; ls -A /scratch; echo t > /scratch/f && cat /scratch/f"  # --tmpfs: empty, writable
    mounts = ["-v", f"{host_dir / 'rw'}:/rw", "-v", f"{host_dir / 'ro'}:/ro:ro", "--tmpfs", "/scratch"]
    done = run(*mounts, images["busybox"], "sh", "-c", script, runtime=runtime)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["from the host", "refused", "t"]
    assert (host_dir / "rw" / "made").read_text() == "from-vm\n"
    assert not (host_dir / "ro" / "refused").exists()


def test_docker_stop_delivers_sigterm_in_the_vm(runtime: str, images: dict[str, str], host_dir: Path) -> None:
    script = "trap 'echo graceful > /data/marker; exit 42' TERM; echo ready > /data/ready; while :; do sleep 0.2; done"
    with removed_after(unique("stop")) as name:
        docker("run", "-d", f"--runtime={runtime}", "--name", name, "-v", f"{host_dir}:/data", images["busybox"],
               "sh", "-c", script)  # fmt: skip
        wait_until(lambda: (host_dir / "ready").exists(), VM_TIMEOUT_S, "the command to start in the VM")
        docker("stop", "-t", "60", name, timeout=120)
        assert (host_dir / "marker").read_text() == "graceful\n"
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "42"


# -- bad input: one line, non-zero exit, nothing left behind -------------------------------------


def refused(runtime: str, *args: str) -> subprocess.CompletedProcess[str]:
    name = unique("bad")
    done = run("--name", name, *args, runtime=runtime)
    assert done.returncode != 0
    assert docker("ps", "-a", "-q", "--filter", f"name={name}").stdout.strip() == ""
    return done


def test_missing_command_is_refused_like_runc(runtime: str, images: dict[str, str]) -> None:
    done = refused(runtime, images["busybox"], "no-such-command")
    reference = run(images["busybox"], "no-such-command")
    assert done.returncode == reference.returncode == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in done.stderr


def test_too_little_memory_is_refused(runtime: str, images: dict[str, str]) -> None:
    done = refused(runtime, "--memory", "100m", images["busybox"], "true")
    assert "invalid --memory='100m'" in done.stderr and "at least" in done.stderr


def test_unknown_runcvm_value_is_refused(runtime: str, images: dict[str, str]) -> None:
    done = refused(runtime, "-e", "RUNCVM_KERNEL_DEBUG=maybe", images["busybox"], "true")
    assert "invalid RUNCVM_KERNEL_DEBUG='maybe'" in done.stderr


def test_containers_without_the_runtime_are_untouched(runtime: str, images: dict[str, str]) -> None:
    done = run(images["busybox"], "sh", "-c", "test -e /vm/rootfs || echo plain-runc")
    assert done.stdout == "plain-runc\n"


def test_install_is_idempotent_and_keeps_other_keys(runtime: str, tmp_path: Path) -> None:
    from tests.runtime.conftest import runtime_command

    again = runtime_command("install", "--name", runtime)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    config = tmp_path / "daemon.json"
    config.write_text('{"log-level": "warn", "runtimes": {"other": {"path": "/bin/other"}}}')
    args = ("--name", "vt-x", "--config", str(config), "--no-reload")
    assert runtime_command("install", *args).returncode == 0
    text = config.read_text()
    assert '"log-level": "warn"' in text and '"other"' in text and '"vt-x"' in text
    assert runtime_command("uninstall", *args).returncode == 0
    assert '"vt-x"' not in config.read_text() and '"other"' in config.read_text()
    os.chmod(config, 0o644)


def test_the_vm_has_the_containers_address_and_serves_through_p(runtime: str, images: dict[str, str]) -> None:
    """-p from the host reaches a server in the VM: the VM took eth0's address, MAC and route."""
    script = "mkdir /www; ip -4 addr show eth0 > /www/addr; ip link show eth0 >> /www/addr; exec httpd -f -p 80 -h /www"
    with removed_after(unique("net")) as name:
        docker("run", "-d", f"--runtime={runtime}", "--name", name, "-p", "127.0.0.1::80", images["busybox"],
               "sh", "-c", script)  # fmt: skip
        port = docker("port", name, "80/tcp").stdout.strip().rsplit(":", 1)[1]
        address = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()
        mac = docker("inspect", "-f", "{{.NetworkSettings.MacAddress}}", name).stdout.strip()

        def fetch() -> str:
            done = subprocess.run(["curl", "-fsS", "-m", "5", f"http://127.0.0.1:{port}/addr"],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            return done.stdout if done.returncode == 0 else ""

        page = wait_until(fetch, VM_TIMEOUT_S, "the VM's web server through -p")
        assert f"inet {address}/" in page and mac in page


def test_docker_exec_runs_in_the_vm_with_its_own_streams_and_exit_code(runtime: str, images: dict[str, str]) -> None:
    with removed_after(unique("exec")) as name:
        docker("run", "-d", f"--runtime={runtime}", "--name", name, images["busybox"], "sleep", "600")

        def exec_(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["docker", "exec", *args], input=stdin, capture_output=True, text=True,
                                  timeout=VM_TIMEOUT_S, check=False)  # fmt: skip

        # the VM's kernel command line, not the host's: the command ran in the guest
        first = wait_until(lambda: exec_(name, "cat", "/proc/cmdline").stdout, VM_TIMEOUT_S, "docker exec to answer")
        assert "panic=-1" in first
        done = exec_(name, "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (done.stdout, done.stderr, done.returncode) == ("out\n", "err\n", 3)
        done = exec_("-u", "1000:1000", "-w", "/etc", "-e", "WHO=exec", name, "sh", "-c", 'id -u; pwd; echo "$WHO"')
        assert done.stdout.splitlines() == ["1000", "/etc", "exec"], done.stderr
        done = exec_("-i", name, "sh", "-c", "cat; echo end", stdin="piped in\n")
        assert done.stdout == "piped in\nend\n", done.stderr


def test_runvm_walkthrough_exported_rootfs_spec_and_run(runtime: str, images: dict[str, str], host_dir: Path) -> None:
    """runvm's own usage, without Docker: `docker export` into rootfs/, `spec`, then `run ID`, without and
    with the terminal."""
    from tests.runtime.conftest import RUNTIME_EXE

    rootfs = host_dir / "rootfs"
    rootfs.mkdir()
    with removed_after(unique("export")) as name:
        docker("create", "--name", name, images["busybox"])
        export = subprocess.run(["docker", "export", name], capture_output=True, check=True, timeout=120)
        subprocess.run(["tar", "-x", "-C", str(rootfs)], input=export.stdout, check=True, timeout=120)
    assert subprocess.run([str(RUNTIME_EXE), "spec"], cwd=host_dir, check=False, timeout=60).returncode == 0
    config = json.loads((host_dir / "config.json").read_text())
    config["process"].update(terminal=False, args=["sh", "-c", "echo from-runvm; uname -r; exit 4"])
    (host_dir / "config.json").write_text(json.dumps(config))
    state = host_dir / "state"
    done = subprocess.run(
        [str(RUNTIME_EXE), "--root", str(state), "run", unique("runvm")],
        cwd=host_dir, capture_output=True, text=True, timeout=VM_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "from-runvm" and lines[1] != os.uname().release  # the guest's kernel, not ours
    # with the terminal (spec's default): runc's own pty relay, the VM's command on a pty of its size
    config["process"].update(terminal=True, args=["sh", "-c", "tty; stty size; exit 6"])
    (host_dir / "config.json").write_text(json.dumps(config))
    console = pexpect.spawn(str(RUNTIME_EXE), ["--root", str(state), "run", unique("runvm-tty")], cwd=str(host_dir),
                            dimensions=(33, 99), timeout=VM_TIMEOUT_S, encoding="utf-8")  # fmt: skip
    console.expect(pexpect.EOF)
    console.close()
    assert (console.before.splitlines(), console.exitstatus) == (["/dev/pts/0", "33 99"], 6)


def test_nginx_through_p_from_the_host(runtime: str, images: dict[str, str]) -> None:
    with removed_after(unique("nginx")) as name:
        docker("run", "-d", f"--runtime={runtime}", "--name", name, "-p", "127.0.0.1::80", images["nginx"])
        port = docker("port", name, "80/tcp").stdout.strip().rsplit(":", 1)[1]

        def fetch() -> str:
            done = subprocess.run(["curl", "-fsS", "-m", "5", f"http://127.0.0.1:{port}/"],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            return done.stdout if done.returncode == 0 else ""

        assert "Welcome to nginx" in wait_until(fetch, VM_TIMEOUT_S, "nginx in the VM through -p")


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (apt-get install podman)")
def test_rootful_podman_with_runtime(runtime: str, images: dict[str, str]) -> None:
    tag = f"localhost/{images['busybox']}"
    if docker("image", "exists", tag, engine="podman", check=False).returncode != 0:
        load = f"docker save {images['busybox']} | podman load -q"
        assert subprocess.run(["sh", "-c", load], capture_output=True, timeout=300, check=False).returncode == 0
    # these hosts' bounding set lacks CAP_SYS_RESOURCE (no raising Podman's default ulimits) and
    # has no systemd for health-check timers: the same flags as tests/container/test_podman.py
    flags = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--no-healthcheck"]
    done = subprocess.run(
        ["podman", "run", "--rm", "--runtime", runtime, *flags, tag, "sh", "-c", "echo out; echo err >&2; exit 6"],
        capture_output=True, text=True, timeout=VM_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert (done.stdout, done.stderr, done.returncode) == ("out\n", "err\n", 6)
