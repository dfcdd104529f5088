"""`virtainer runtime install|uninstall`: register the runtime with dockerd, idempotently.

daemon.json keeps every other key; dockerd reloads it on SIGHUP (runtimes are reloadable), so no
running container is disturbed. Says exactly what it changed.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from virtainer.errors import VirtainerError
from virtainer.exit_codes import EXIT_CONFIG, EXIT_OK, exit_status
from virtainer.runtime import artifacts, entry
from virtainer.runtime.netsetup import DAEMON_JSON

DOCKER_PIDFILE = Path("/var/run/docker.pid")
DEFAULT_NAME = "virtainer"
PODMAN_DROPINS = Path("/etc/containers/containers.conf.d")  # rootful Podman's containers.conf drop-ins
RELOAD_DEADLINE_S = 30


class InstallError(VirtainerError):
    pass


def entry_script() -> str:
    """The executable dockerd calls: virtainer.runtime.entry under this Python without `site`
    (~50 ms less per call than the `virtainer-runtime` command; dockerd makes 3-5 per docker run).
    One per Python and checkout, in the runtime cache, rewritten only when it differs."""
    text = entry.script(sys.executable)
    path = artifacts.cache_root() / "bin" / f"virtainer-runtime-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}")
        temporary.write_text(text)
        temporary.chmod(0o755)
        temporary.replace(path)
    return str(path)


def compile_code() -> None:
    """Bytecode beside virtainer's sources: the launcher imports them from a read-only bind mount
    (PYTHONDONTWRITEBYTECODE), so without it every container compiles them again at its start."""
    compileall.compile_dir(Path(__file__).resolve().parents[1], quiet=2)


def read_daemon_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except ValueError as error:
        raise InstallError(f"{path} is not valid JSON ({error}); nothing was changed") from None
    if not isinstance(data, dict):
        raise InstallError(f"{path} does not hold a JSON object; nothing was changed")
    return data


def write_daemon_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".virtainer-tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    if path.exists():
        os.chmod(temporary, path.stat().st_mode & 0o7777)
    temporary.replace(path)


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(data))
    return copied


def with_runtime(data: dict[str, Any], name: str, executable: str) -> dict[str, Any]:
    new = _copy(data)
    runtimes = new.setdefault("runtimes", {})
    if not isinstance(runtimes, dict):
        raise InstallError("daemon.json's 'runtimes' is not an object; nothing was changed")
    runtimes[name] = {"path": executable}
    return new


def without_runtime(data: dict[str, Any], name: str) -> dict[str, Any]:
    new = _copy(data)
    runtimes = new.get("runtimes")
    if isinstance(runtimes, dict):
        # an empty "runtimes" stays: dockerd keeps its old runtimes on SIGHUP when the key is absent
        runtimes.pop(name, None)
    return new


def dockerd_pid() -> int:
    try:
        return int(DOCKER_PIDFILE.read_text().strip())
    except (OSError, ValueError):
        pass
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=False).stdout.split()
    if len(found) != 1:
        raise InstallError("cannot find the one running dockerd to reload", hint="reload it yourself: kill -HUP <pid>")
    return int(found[0])


def docker_runtimes() -> dict[str, str | None]:
    """The runtimes dockerd has loaded, with their paths."""
    done = subprocess.run(
        ["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True, timeout=30, check=False
    )
    try:
        loaded = json.loads(done.stdout or "{}")
        return {name: (entry or {}).get("path") for name, entry in loaded.items()}
    except (ValueError, AttributeError):
        return {}


def reload_dockerd(name: str, path: str | None) -> None:
    """SIGHUP (never a restart: other containers keep running), then wait until dockerd has `name`
    at `path` (None: has it no more)."""
    os.kill(dockerd_pid(), signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_DEADLINE_S
    while docker_runtimes().get(name) != path:
        if time.monotonic() > deadline:
            raise InstallError(f"dockerd did not {'pick up' if path else 'drop'} runtime '{name}' after SIGHUP")
        time.sleep(0.2)


def install(name: str, config: Path, *, reload: bool, rebuild: bool) -> list[str]:
    said: list[str] = []
    artifacts.ensure(rebuild=rebuild, say=lambda line: print(f"virtainer runtime: {line}", flush=True))
    compile_code()
    executable = entry_script()
    old = read_daemon_json(config)
    new = with_runtime(old, name, executable)
    if new == old:
        said.append(f"runtime '{name}' is already registered in {config} ({executable}); nothing changed")
    else:
        write_daemon_json(config, new)
        said.append(f"{config}: runtimes.{name}.path = {executable} (every other key kept)")
    if reload and docker_runtimes().get(name) != executable:  # new, or at another path
        reload_dockerd(name, executable)
        said.append("dockerd reloaded with SIGHUP (running containers untouched)")
    if config == DAEMON_JSON:  # a test's own daemon.json leaves the machine's Podman alone
        said += register_with_podman(name, executable)
    return said


def podman_dropin(name: str) -> Path:
    return PODMAN_DROPINS / f"50-virtainer-{name}.conf"


def register_with_podman(name: str, executable: str) -> list[str]:
    """Rootful Podman reads engine.runtimes from containers.conf drop-ins (no daemon to reload)."""
    if not PODMAN_DROPINS.parent.is_dir():
        return []  # Podman is not installed
    path = podman_dropin(name)
    text = "# written by `virtainer runtime install`; removed by uninstall\n"
    text += f'[engine.runtimes]\n{name} = ["{executable}"]\n'
    if path.exists() and path.read_text() == text:
        return []
    PODMAN_DROPINS.mkdir(exist_ok=True)
    temporary = path.with_name(path.name + ".virtainer-tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return [f"{path}: podman run --runtime {name} (rootful Podman)"]


def uninstall(name: str, config: Path, *, reload: bool) -> list[str]:
    said: list[str] = []
    if config == DAEMON_JSON and podman_dropin(name).exists():
        podman_dropin(name).unlink()
        said.append(f"{podman_dropin(name)} removed (rootful Podman)")
    old = read_daemon_json(config)
    new = without_runtime(old, name)
    if new == old:
        return [*said, f"runtime '{name}' is not registered in {config}; nothing changed"]
    write_daemon_json(config, new)
    said.append(f"{config}: runtimes.{name} removed (every other key kept)")
    if reload and name in docker_runtimes():
        reload_dockerd(name, None)
        said.append("dockerd reloaded with SIGHUP (running containers untouched)")
    return said


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="virtainer runtime", description="register the OCI runtime with dockerd")
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--name", default=DEFAULT_NAME, help="the name for docker run --runtime (default virtainer)")
    parser.add_argument("--config", type=Path, default=DAEMON_JSON, help="dockerd's daemon.json")
    parser.add_argument("--no-reload", action="store_true", help="do not SIGHUP dockerd")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the runtime tree and guest")
    options = parser.parse_args(list(argv))
    if not options.name.replace("-", "").replace("_", "").isalnum():
        print(f"virtainer runtime: invalid --name '{options.name}': letters, digits, - and _", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if options.action == "install":
            said = install(options.name, options.config, reload=not options.no_reload, rebuild=options.rebuild)
        else:
            said = uninstall(options.name, options.config, reload=not options.no_reload)
    except VirtainerError as error:
        print(f"virtainer runtime: {error}", file=sys.stderr)
        return exit_status(error)
    for line in said:
        print(f"virtainer runtime: {line}")
    return EXIT_OK
