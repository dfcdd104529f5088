"""The manager's view of one Docker engine (RancherVM's management container): the virtainer
containers on it, found by the label every virtainer image carries, and the images to create
more from. Talks to the engine with the Docker SDK (DOCKER_HOST applies); keeps nothing of its own:
the engine is the record of what exists.

Each VM container has its own REST API; `endpoint()` tells where it answers and with which token
(the container's VIRTAINER_API_TOKEN, or the one it generated and keeps 0600, read through the
engine as `docker exec cat` would: whoever may use the engine may read it).

Blocking calls: the API runs them on worker threads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from virtainer.api.defaults import DEFAULT_TOKEN_FILE
from virtainer.errors import ConfigError, ConflictError, NotFoundError, VirtainerError
from virtainer.orchestration import needs
from virtainer.orchestration.fleet import IMAGE_LABEL
from virtainer.validators import NAME_RULE, NAME_TEXT, NO, YES

MANAGED_LABEL = "dev.virtainer.managed-by"  # on what the manager creates (containers, volumes)
MANAGER_ENV = needs.MANAGER_ENV  # the manager's own container: not a VM, never listed
NAME_RE = re.compile(NAME_TEXT)  # container and volume names: the rule of VM names
PORT_RE = re.compile(r"(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5})?:(\d{1,5})(?:/(tcp|udp))?")
PORT_FORM = "[ADDRESS:]HOST_PORT:CONTAINER_PORT[/udp], blank-separated (2222:22 127.0.0.1:8080:80)"
ENV_LINE_FORM = "NAME=VALUE lines with the container's settings (VIRTAINER_*, RAM, IMAGE_URL, ...)"
STOP_MARGIN_S = needs.STOP_MARGIN_S


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in YES


@dataclass(frozen=True)
class VmContainer:
    """One virtainer container as the page lists it."""

    name: str
    id: str
    image: str
    variant: str
    state: str  # created, running, exited, ...
    health: str  # starting, healthy, unhealthy, or "" without a health check
    volume: str  # what holds the diff: a named volume, a host path, or "" (the image's anonymous one)
    ports: tuple[str, ...]  # published: "127.0.0.1:2222->22/tcp"
    api: bool  # the container's REST API is on
    created: str


@dataclass(frozen=True)
class NewContainer:
    """What the page's form asks for; `check()` refuses bad values before anything is created."""

    name: str
    image: str
    memory_mib: int = 1024
    cpus: int = 2
    ssh_key: str = ""
    volume: str = ""  # a named volume for the diff; "" = <name>-disk
    ports: str = ""  # PORT_FORM
    env: str = ""  # ENV_LINE_FORM
    network: bool = True  # a NIC on the container's address (needs NET_ADMIN and SYS_ADMIN)
    kvm: bool = False  # pass the engine host's /dev/kvm (the VM then runs under KVM when it can)

    @property
    def volume_name(self) -> str:
        return self.volume or f"{self.name}-disk"

    def run_environment(self) -> dict[str, str]:
        env = {"RAM": str(self.memory_mib), "CPU": str(self.cpus)}
        if self.ssh_key.strip():
            env["VIRTAINER_SSH_KEYS"] = self.ssh_key.strip()
        if not self.network:
            env["VIRTAINER_NETWORK"] = "none"
        return env | parse_env_lines(self.env)


def parse_env_lines(text: str) -> dict[str, str]:
    accepted = needs.accepted_env_names() - {MANAGER_ENV}
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.strip().partition("=")
        if not sep or key not in accepted:
            raise ConfigError("environment", line.strip()[:80], ENV_LINE_FORM)
        env[key] = value
    return env


def parse_ports(text: str) -> dict[str, Any]:
    """Docker SDK `ports`: {"22/tcp": ("127.0.0.1", 2222) | 2222 | None (any free port)}."""
    ports: dict[str, Any] = {}
    for part in text.replace(",", " ").split():
        match = PORT_RE.fullmatch(part)
        numbers = [int(n) for n in (match.group(2) or "0", match.group(3))] if match else []
        if not match or not all(0 <= n <= 65535 for n in numbers) or numbers[1] == 0:
            raise ConfigError("ports", part, PORT_FORM)
        host_port = numbers[0] or None
        address = match.group(1)
        ports[f"{numbers[1]}/{match.group(4) or 'tcp'}"] = (address, host_port) if address else host_port
    return ports


def check_new(request: NewContainer) -> None:
    if not NAME_RE.fullmatch(request.name):
        raise ConfigError("name", request.name, NAME_RULE)
    if request.volume and not NAME_RE.fullmatch(request.volume):
        raise ConfigError("volume", request.volume, f"a volume name: {NAME_RULE}")
    if not request.image.strip() or any(c.isspace() for c in request.image):
        raise ConfigError("image", request.image, "a virtainer image, e.g. virtainer/debian:latest")
    if not 64 <= request.memory_mib <= 1 << 20:
        raise ConfigError("memory", request.memory_mib, "MiB from 64 to 1048576")
    if not 1 <= request.cpus <= 256:
        raise ConfigError("cpus", request.cpus, "1 to 256")
    parse_ports(request.ports)
    request.run_environment()  # the key and the extra lines are checked here


class Engine:
    """The Docker engine, through the SDK (one client, thread-safe for these calls)."""

    def __init__(self, client: Any = None) -> None:
        if client is None:
            import docker  # type: ignore[import-untyped]  # the manager only: nothing else loads the SDK

            try:
                client = docker.from_env(timeout=60)
                client.ping()
            except docker.errors.DockerException as error:
                raise VirtainerError(f"the Docker engine does not answer: {_first_line(error)}") from None
        self._client = client
        self._tokens: dict[str, str] = {}  # container id + start time -> its API token
        self._events: Any = None

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
        self._client.close()

    def containers(self) -> list[VmContainer]:
        found = self._client.containers.list(all=True, filters={"label": IMAGE_LABEL})
        return sorted((_describe(c) for c in found if not _is_manager(c)), key=lambda c: c.name)

    def images(self) -> list[str]:
        """Tags of the engine's virtainer images, newest first."""
        images = self._client.images.list(filters={"label": IMAGE_LABEL})
        images.sort(key=lambda image: image.attrs.get("Created", ""), reverse=True)
        return [tag for image in images for tag in image.tags]

    def create(self, request: NewContainer) -> VmContainer:
        check_new(request)
        errors = self._errors()
        try:
            image = self._client.images.get(request.image)
        except errors.ImageNotFound:
            raise NotFoundError(f"no image {request.image} on this engine", hint="build or pull it first") from None
        if IMAGE_LABEL not in (image.labels or {}):
            raise ConfigError("image", request.image, f"a virtainer image (one with the label {IMAGE_LABEL})")
        self._refuse_taken(request)
        volume = self._volume(request.volume_name)
        options = {
            "name": request.name,
            "detach": True,
            "environment": request.run_environment(),
            "volumes": {volume: {"bind": str(needs.DIFF_MOUNT), "mode": "rw"}},
            "ports": parse_ports(request.ports),
            "labels": {MANAGED_LABEL: "virtainer"},
            "cap_add": list(needs.NETWORK_CAPABILITIES) if request.network else [],
            "devices": [f"{needs.KVM_DEVICE}:{needs.KVM_DEVICE}:rwm"] if request.kvm else [],
            "stop_signal": "SIGTERM",
        }
        try:
            container = self._client.containers.run(request.image, **options)
        except errors.APIError as error:
            raise VirtainerError(f"the engine refused the container: {_explanation(error)}") from None
        return _describe(self._client.containers.get(container.id))

    def start(self, name: str) -> None:
        self._act(name, lambda container: container.start())

    def stop(self, name: str, timeout_s: int) -> None:
        self._act(name, lambda container: container.stop(timeout=timeout_s))

    def remove(self, name: str, *, volume: bool) -> str | None:
        """Remove the container; its diff's named volume only when asked. Returns the volume kept
        (or None)."""
        container = self._get(name)
        mounted = _diff_mount(container.attrs)
        if container.status == "running":
            raise ConflictError(f"{name} is running", hint="stop it first (its guest shuts down cleanly)")
        self._act(name, lambda c: c.remove(v=False))
        if mounted.get("Type") != "volume":
            return None
        if volume:
            self._act_volume(mounted["Name"], lambda v: v.remove())
            return None
        return str(mounted["Name"])

    def volume_exists(self, name: str) -> bool:
        try:
            self._client.volumes.get(name)
        except self._errors().NotFound:
            return False
        return True

    def endpoint(self, name: str) -> tuple[str, str]:
        """(URL, token) of a running container's REST API."""
        container = self._get(name)
        env = _env(container.attrs)
        if container.status != "running" or not _api_on(env):
            raise ConflictError(f"{name} has no REST API running", hint="start it (and keep VIRTAINER_API on)")
        address = next(
            (
                net["IPAddress"]
                for net in container.attrs["NetworkSettings"]["Networks"].values()
                if net.get("IPAddress")
            ),
            "",
        )
        if not address:
            raise ConflictError(f"{name} has no address on a Docker network the manager can reach")
        port = env.get("VIRTAINER_API_PORT") or str(needs.API_PORT)
        return f"http://{address}:{port}", self._token(container, env)

    def watch(self, on_change: Callable[[str, str], None]) -> None:
        """Call on_change(container name, action) for each event of a virtainer container, until
        close() (blocking: a thread of its own)."""
        self._events = self._client.events(decode=True, filters={"type": "container", "label": IMAGE_LABEL})
        try:
            for event in self._events:
                actor = event.get("Actor") or {}
                name = (actor.get("Attributes") or {}).get("name", "")
                action = str(event.get("Action") or event.get("status") or "").split(":", 1)[0]
                if name and not action.startswith("exec_"):
                    on_change(name, action)
        except Exception:  # noqa: BLE001 - the stream closed under it (close()), or the engine went away
            return

    def _token(self, container: Any, env: Mapping[str, str]) -> str:
        if env.get(needs.API_TOKEN_ENV):
            return env[needs.API_TOKEN_ENV]
        key = f"{container.id}:{container.attrs['State'].get('StartedAt', '')}"
        if key not in self._tokens:
            path = env.get("VIRTAINER_API_TOKEN_FILE") or str(DEFAULT_TOKEN_FILE)
            code, output = container.exec_run(["cat", path], demux=False)
            token = output.decode(errors="replace").strip() if code == 0 and output else ""
            if not token:
                raise ConflictError(f"{container.name}'s API token is not readable yet", hint="its API is starting")
            self._tokens[key] = token
        return self._tokens[key]

    def _refuse_taken(self, request: NewContainer) -> None:
        errors = self._errors()
        try:
            self._client.containers.get(request.name)
            raise ConflictError(f"a container named {request.name} exists", hint="choose another name")
        except errors.NotFound:
            pass
        for container in self._client.containers.list(all=True, filters={"volume": request.volume_name}):
            raise ConflictError(
                f"volume {request.volume_name} holds the diff of {container.name}",
                hint="one VM per diff: remove that container, or choose another volume",
            )

    def _volume(self, name: str) -> str:
        """A named volume for the diff; an existing one is reused (its diff continues)."""
        if not self.volume_exists(name):
            self._client.volumes.create(name=name, labels={MANAGED_LABEL: "virtainer"})
        return name

    def _get(self, name: str) -> Any:
        errors = self._errors()
        try:
            container = self._client.containers.get(name)
        except errors.NotFound:
            raise NotFoundError(f"no container {name}") from None
        if IMAGE_LABEL not in (container.labels or {}) or _is_manager(container):
            raise NotFoundError(f"no virtainer container {name}")
        return container

    def _act(self, name: str, action: Callable[[Any], object]) -> None:
        try:
            action(self._get(name))
        except self._errors().APIError as error:
            raise VirtainerError(f"the engine refused: {_explanation(error)}") from None

    def _act_volume(self, name: str, action: Callable[[Any], object]) -> None:
        try:
            action(self._client.volumes.get(name))
        except self._errors().APIError as error:
            raise VirtainerError(f"the engine refused to remove volume {name}: {_explanation(error)}") from None

    @staticmethod
    def _errors() -> Any:
        import docker.errors  # type: ignore[import-untyped]

        return docker.errors


def _env(attrs: Mapping[str, Any]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in attrs.get("Config", {}).get("Env") or [])


def _api_on(env: Mapping[str, str]) -> bool:
    return env.get("VIRTAINER_API", "1").strip().lower() not in NO


def _is_manager(container: Any) -> bool:
    return _truthy(_env(container.attrs).get(MANAGER_ENV))


def _diff_mount(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return next((m for m in attrs.get("Mounts") or [] if m.get("Destination") == str(needs.DIFF_MOUNT)), {})


def _describe(container: Any) -> VmContainer:
    attrs = container.attrs
    mount = _diff_mount(attrs)
    volume = mount.get("Name", "") if mount.get("Type") == "volume" else mount.get("Source", "")
    anonymous = mount.get("Type") == "volume" and len(volume) == 64 and MANAGED_LABEL not in (container.labels or {})
    published = [
        f"{binding['HostIp'] or '0.0.0.0'}:{binding['HostPort']}->{port}"
        for port, bindings in sorted((attrs.get("NetworkSettings", {}).get("Ports") or {}).items())
        for binding in bindings or []
    ]
    state = attrs.get("State", {})
    return VmContainer(
        name=container.name,
        id=container.id[:12],
        image=(attrs.get("Config", {}).get("Image") or ""),
        variant=(container.labels or {}).get(IMAGE_LABEL, ""),
        state=str(state.get("Status", container.status)),
        health=str((state.get("Health") or {}).get("Status", "")) if state.get("Running") else "",  # else stale
        volume="" if anonymous else volume,
        ports=tuple(published),
        api=_api_on(_env(attrs)),
        created=str(attrs.get("Created", "")),
    )


def _explanation(error: Any) -> str:
    return _first_line(getattr(error, "explanation", None) or error)


def _first_line(error: object) -> str:
    return (str(error).strip().splitlines() or ["no detail"])[0][:300]
