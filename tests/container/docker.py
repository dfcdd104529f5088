"""A small, explicit Docker driver for the container tests (the real `docker` CLI, no SDK)."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.waiting import wait_until
from virtainer.orchestration import needs

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-images.sh"
NETWORK_CAPS = needs.NETWORK_CAPABILITIES  # what a VM with a NIC needs where --privileged cannot start


def docker(
    *args: str, timeout: float = 120, check: bool = True, engine: str = "docker"
) -> subprocess.CompletedProcess[str]:
    """Run the engine's CLI (docker, or podman: same commands)."""
    done = subprocess.run([engine, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{engine} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class Build:
    tag: str  # immutable: virtainer/VARIANT:<content key>
    cached: bool
    seconds: float
    log: str


def build_image(variant: str, env: Mapping[str, str] | None = None, timeout: float = 1200) -> Build:
    """Run scripts/build-images.sh (it skips images whose inputs did not change)."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), variant],
        capture_output=True, text=True, timeout=timeout, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise AssertionError(f"build-images.sh {variant} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    match = re.search(r"^(built|cached) (\S+)$", done.stdout, re.MULTILINE)
    assert match, f"build-images.sh printed no result line:\n{done.stdout}"
    return Build(match.group(2), match.group(1) == "cached", seconds, done.stdout + done.stderr)


def docker_host_address(network: str = "bridge") -> str:
    """This host's address on a Docker network, as its containers reach it: read from the kernel.

    Not IPAM's Gateway field: an engine that has just created its default bridge reports none
    (the field appears only after a daemon restart)."""
    template = '{{.Id}} {{with index .Options "com.docker.network.bridge.name"}}{{.}}{{end}}'
    network_id, _, named = docker("network", "inspect", network, "-f", template).stdout.strip().partition(" ")
    # a user-defined network's bridge is br-<first 12 of its id> unless named; the default one's docker0
    interface = named or ("docker0" if network == "bridge" else f"br-{network_id[:12]}")
    done = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", interface], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    match = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", done.stdout)
    assert match, f"the bridge {interface} of Docker network {network} has no IPv4 address: {done.stdout}{done.stderr}"
    return match.group(1)


def unique(prefix: str) -> str:
    return f"vt-ctest-{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class Container:
    name: str
    started_at: float = field(default_factory=time.monotonic)  # just before `docker run`
    engine: str = "docker"

    def logs(self) -> str:
        done = subprocess.run(
            [self.engine, "logs", self.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False
        )
        return done.stdout.decode(errors="replace")

    def inspect(self, template: str) -> str:
        return docker("inspect", "-f", template, self.name, engine=self.engine).stdout.strip()

    @property
    def ip(self) -> str:
        return self.inspect("{{.NetworkSettings.IPAddress}}")

    @property
    def gateway(self) -> str:
        return self.inspect("{{.NetworkSettings.Gateway}}")

    def health(self) -> str:
        return self.inspect("{{if .State.Health}}{{.State.Health.Status}}{{end}}")

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def exit_code(self) -> int:
        return int(self.inspect("{{.State.ExitCode}}"))

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *command, timeout=timeout, check=False, engine=self.engine)

    def wait_log(self, pattern: str, timeout_s: float) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            match = regex.search(self.logs())
            if match is None and not self.running():
                raise AssertionError(f"container ended before /{pattern}/ showed up:\n{self.logs()[-3000:]}")
            return match

        return wait_until(found, timeout_s, f"/{pattern}/ in docker logs of {self.name}", interval_s=1.0)

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds from `docker run` to healthy."""

        def healthy() -> bool:
            status = self.health()
            if status == "unhealthy" or not self.running():
                raise AssertionError(f"{self.name} is {status or 'not running'}:\n{self.logs()[-3000:]}")
            return status == "healthy"

        wait_until(healthy, timeout_s, f"{self.name} to turn healthy", interval_s=1.0)
        return time.monotonic() - self.started_at

    def stop(self, timeout_s: int = 60) -> float:
        started = time.monotonic()
        docker("stop", "-t", str(timeout_s), self.name, timeout=timeout_s + 60, engine=self.engine)
        return time.monotonic() - started

    def wait_exit(self, timeout_s: float) -> int:
        wait_until(lambda: not self.running(), timeout_s, f"{self.name} to exit", interval_s=0.5)
        return self.exit_code()

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False, engine=self.engine)


def run_args(
    image: str,
    *,
    env: Mapping[str, str] | None = None,
    volumes: Sequence[str] = (),
    caps: Sequence[str] = (),
    publish: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    args: list[str] = []
    for cap in caps:
        args += ["--cap-add", cap]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    for volume in volumes:
        args += ["-v", volume]
    for port in publish:
        args += ["-p", port]
    return [*args, *extra, image]


def start(image: str, prefix: str, engine: str = "docker", **options: object) -> Container:
    name = unique(prefix)
    container = Container(name, engine=engine)
    docker("run", "-d", "--name", name, *run_args(image, **options), engine=engine)  # type: ignore[arg-type]
    return container


def run_to_end(
    image: str, *, timeout: float = 120, engine: str = "docker", **options: object
) -> subprocess.CompletedProcess[str]:
    """`docker run --rm` in the foreground: stdout and stderr kept apart."""
    name = unique("fg")
    args = run_args(image, **options)  # type: ignore[arg-type]
    try:
        return docker("run", "--rm", "--name", name, *args, timeout=timeout, check=False, engine=engine)
    finally:
        docker("rm", "-f", name, check=False, engine=engine)
