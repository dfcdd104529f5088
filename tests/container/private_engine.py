"""A second dockerd of the test's own, in a network namespace of its own.

The Swarm test makes this engine a swarm instead of the shared one: `docker swarm init` adds
networks, bridges and iptables chains (ingress, docker_gwbridge), and other tests use the shared
engine at the same time. This engine has its own data root, exec root, socket and containerd
namespace; its bridges, iptables rules and published ports live in its network namespace, so
nothing it does reaches the host's network or the shared engine. Only the mount namespace is
shared (containerd's runc must see the network namespaces this dockerd creates).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.container.docker import docker
from tests.waiting import wait_until

RUN_ROOT = Path("/run")
START_TIMEOUT_S = 60
SYSTEM_CONTAINERD = Path("/run/containerd/containerd.sock")  # dockerd uses it when it runs


@dataclass
class PrivateEngine:
    name: str
    data_root: Path
    run_root: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.run_root / 'docker.sock'}"

    @property
    def netns(self) -> Path:
        return RUN_ROOT / "netns" / self.name

    @property
    def log(self) -> Path:
        return self.run_root / "dockerd.log"

    @property
    def docker_command(self) -> tuple[str, ...]:
        return ("docker", "-H", self.host)

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("-H", self.host, *args, timeout=timeout, check=check)

    def in_netns(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command in the engine's network namespace (where its published ports listen)."""
        return subprocess.run(
            ["nsenter", f"--net={self.netns}", *command], capture_output=True, text=True, timeout=timeout, check=False
        )

    def banner(self, port: int, address: str = "127.0.0.1") -> str:
        """The first line a TCP server at the engine's ADDRESS:PORT sends ('' if none)."""
        probe = f"exec 3<>/dev/tcp/{address}/{port} && head -n 1 <&3"
        return self.in_netns("timeout", "5", "bash", "-c", probe, timeout=15).stdout.strip()

    def load(self, image: str) -> None:
        """An image of the shared engine, copied in (docker save | docker load)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        assert save.stdout is not None
        done = subprocess.run(
            ["docker", "-H", self.host, "load"], stdin=save.stdout, capture_output=True, text=True, timeout=600
        )
        save.stdout.close()
        assert save.wait(timeout=60) == 0 and done.returncode == 0, f"loading {image}: {done.stderr}"


def dockerd_command(name: str, run_root: Path, data_root: Path) -> list[str]:
    """dockerd in the network namespace NAME, with nothing of the shared engine's."""
    return [
        "nsenter", f"--net={RUN_ROOT / 'netns' / name}", "dockerd",
        "--config-file", str(run_root / "daemon.json"), "--data-root", str(data_root),
        "--exec-root", str(run_root / "exec"), "--pidfile", str(run_root / "docker.pid"),
        "-H", f"unix://{run_root / 'docker.sock'}",
        "--containerd-namespace", name, "--containerd-plugins-namespace", f"{name}-plugins",
    ]  # fmt: skip


def _answers(engine: PrivateEngine) -> bool:
    assert engine.process.poll() is None, f"dockerd ended:\n{engine.log.read_text()[-3000:]}"
    return engine.docker("version", check=False, timeout=10).returncode == 0


@contextmanager
def private_engine(scratch: Path) -> Iterator[PrivateEngine]:
    """Start the engine; at the end stop it and remove everything it made (its swarm too)."""
    name = f"vt-engine-{uuid.uuid4().hex[:6]}"
    run_root, data_root = RUN_ROOT / name, scratch / name
    run_root.mkdir()
    (run_root / "daemon.json").write_text("{}\n")  # not the shared engine's settings
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        with (run_root / "dockerd.log").open("wb") as log:
            process = subprocess.Popen(dockerd_command(name, run_root, data_root), stdout=log, stderr=subprocess.STDOUT)
        engine = PrivateEngine(name, data_root, run_root, process)
        wait_until(lambda: _answers(engine), START_TIMEOUT_S, "the private dockerd to answer")
        yield engine
    finally:
        if process is not None:
            _stop(process, name)
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)
        shutil.rmtree(run_root, ignore_errors=True)
        shutil.rmtree(data_root, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes], name: str) -> None:
    """Leave the swarm (if any), stop dockerd, drop its containerd namespaces."""
    host = f"unix://{RUN_ROOT / name / 'docker.sock'}"
    if process.poll() is None:
        docker("-H", host, "swarm", "leave", "--force", check=False, timeout=120)
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    if SYSTEM_CONTAINERD.exists():  # else dockerd ran a containerd of its own, gone with it
        for namespace in (name, f"{name}-plugins"):
            subprocess.run(["ctr", "namespaces", "remove", namespace], capture_output=True, check=False, timeout=30)
