"""Where the fleet's APIs are: URLs given on the command line, a fleet file, or the virtainer
containers of one Docker engine (found by the label every virtainer image carries).

Fleet file: one source per line, `URL [TOKEN]`, `#` comments. A file holding tokens must be
readable by its owner only. GET needs no token; a token lets later commands act on the fleet.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from virtainer.api.defaults import DEFAULT_PORT, DEFAULT_TOKEN_FILE
from virtainer.api.fleet import Source
from virtainer.errors import ConfigError, VirtainerError
from virtainer.orchestration import needs
from virtainer.validators import NO, YES

IMAGE_LABEL = "dev.virtainer.variant"  # set by container/Dockerfile on every virtainer image


def sources_from_file(path: Path) -> list[Source]:
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError("--fleet", str(path), f"a readable file ({error.strerror})") from None
    sources = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) > 2 or not parts[0].startswith(("http://", "https://")):
            raise ConfigError(f"--fleet {path} line {number}", line.strip(), "URL [TOKEN] (http:// or https://)")
        token = parts[1] if len(parts) == 2 else None
        if token and mode & 0o077:
            raise ConfigError("--fleet", str(path), "readable by its owner only when it holds tokens (chmod 600)")
        sources.append(Source(parts[0], parts[0], token))
    return sources


def docker_sources(labels: Sequence[str] = (), engine: str = "docker") -> list[Source]:
    """The running virtainer containers of the engine (DOCKER_HOST applies), as API sources."""
    filters = ["--filter", f"label={IMAGE_LABEL}"]
    for label in labels:
        filters += ["--filter", f"label={label}"]
    ids = _engine(engine, "ps", "-q", *filters).split()
    if not ids:
        return []
    sources = []
    for container in json.loads(_engine(engine, "inspect", *ids)):
        env = dict(item.partition("=")[::2] for item in container["Config"].get("Env") or [])
        if env.get("VIRTAINER_API", "1").strip().lower() in NO:
            continue
        if env.get(needs.MANAGER_ENV, "").strip().lower() in YES:
            continue  # a manager (no VM of its own)
        port = env.get("VIRTAINER_API_PORT", str(DEFAULT_PORT))
        address = next(
            (net["IPAddress"] for net in container["NetworkSettings"]["Networks"].values() if net.get("IPAddress")),
            None,
        )
        name = container["Name"].lstrip("/")
        url = f"http://{address}:{port}" if address else f"http://{name}.invalid:{port}"
        sources.append(Source(name, url, env.get("VIRTAINER_API_TOKEN") or _generated_token(engine, name, env)))
    return sources


def _generated_token(engine: str, name: str, env: dict[str, str]) -> str | None:
    """The token a container generated (every route but health needs it), read where it keeps it:
    whoever may run `docker exec` there may read it."""
    path = env.get("VIRTAINER_API_TOKEN_FILE") or str(DEFAULT_TOKEN_FILE)
    try:
        done = subprocess.run([engine, "exec", name, "cat", path], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _engine(engine: str, *args: str) -> str:
    try:
        done = subprocess.run([engine, *args], capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise VirtainerError(f"--docker needs the {engine} command") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise VirtainerError(f"{engine} {args[0]} failed: {detail}")
    return done.stdout


def env_token() -> str | None:
    return os.environ.get("VIRTAINER_API_TOKEN") or None
