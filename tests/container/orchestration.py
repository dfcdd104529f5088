"""Helpers of the compose and Swarm tests: a real compose client, Docker's event stream (exit
codes of containers that are gone afterwards), named volumes and the diffs in them."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.container.docker import ROOT, docker

EXAMPLES = ROOT / "examples"


def compose_command() -> list[str] | None:
    """docker-compose (Debian's package), else compose v2 as a docker plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    return ["docker", "compose"] if done.returncode == 0 else None


@dataclass
class Project:
    """One compose project in a directory of its own (a copy of an example)."""

    name: str
    directory: Path
    files: Sequence[str]
    command: Sequence[str]

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = [part for name in self.files for part in ("-f", name)]
        done = subprocess.run(
            [*self.command, "-p", self.name, *files, *args],
            cwd=self.directory, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def container(self, service: str) -> str:
        """The container's name (compose v1: PROJECT_SERVICE_1, v2: PROJECT-SERVICE-1)."""
        ids = self.run("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"service {service}: containers {ids}"
        return docker("inspect", "-f", "{{.Name}}", ids[0]).stdout.strip().lstrip("/")

    def volume(self, name: str) -> str:
        return f"{self.name}_{name}"


def copy_example(source: Path, destination: Path, env: Mapping[str, str]) -> Path:
    """The example's files, with its .env settings replaced by `env` where given."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("multi-vm"))
    settings = dotenv(source / ".env")
    settings.update(env)
    (destination / ".env").write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return destination


def dotenv(path: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


@dataclass
class Deaths:
    """Containers' exits as Docker reports them while they happen: name -> exit code."""

    codes: dict[str, int] = field(default_factory=dict)
    condition: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, names: Sequence[str], timeout_s: float) -> dict[str, int]:
        with self.condition:
            self.condition.wait_for(lambda: all(name in self.codes for name in names), timeout=timeout_s)
            return {name: self.codes[name] for name in names if name in self.codes}


@contextmanager
def watch_deaths(filters: Sequence[str], docker_command: Sequence[str] = ("docker",)) -> Iterator[Deaths]:
    """`docker events` for die events matching the filters (e.g. label=com.docker.compose.project=P)."""
    args = [*docker_command, "events", "--format", "{{json .}}", "--filter", "type=container", "--filter", "event=die"]
    for item in filters:
        args += ["--filter", item]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    deaths = Deaths()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            attributes = json.loads(line).get("Actor", {}).get("Attributes", {})
            with deaths.condition:
                deaths.codes[attributes.get("name", "?")] = int(attributes.get("exitCode", -1))
                deaths.condition.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield deaths
    finally:
        process.terminate()
        process.wait(timeout=10)


def volume_path(volume: str) -> Path:
    return Path(docker("volume", "inspect", "-f", "{{.Mountpoint}}", volume).stdout.strip())


def qcow2_check(diff: Path) -> subprocess.CompletedProcess[str]:
    """`qemu-img check` of the diff alone: its backing file is a path inside the container."""
    spec = {"driver": "qcow2", "file": {"driver": "file", "filename": str(diff)}, "backing": None}
    return subprocess.run(
        ["qemu-img", "check", "json:" + json.dumps(spec)], capture_output=True, text=True, timeout=60, check=False
    )


def base_image_of(image: str) -> str:
    """The Debian base an image was built on (a plain image with bash, no registry needed)."""
    template = '{{index .Config.Labels "org.opencontainers.image.base.name"}}'
    return docker("inspect", "-f", template, image).stdout.strip()
