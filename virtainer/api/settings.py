"""The API's settings: one validated object, from keyword arguments or the environment."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from virtainer.api.defaults import DEFAULT_PORT, DEFAULT_TOKEN_FILE
from virtainer.errors import ConfigError
from virtainer.hypervisor import DEFAULT_URI

_PLACEHOLDERS = {"changeme", "change-me", "secret", "token", "password", "test", "xxx"}


class ApiSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)  # 0: any free port (tests)
    libvirt_uri: str = DEFAULT_URI
    token: SecretStr | None = None  # None: generated at start, printed once, stored 0600
    token_file: Path = DEFAULT_TOKEN_FILE
    vms: tuple[str, ...] = ()  # serve only these VMs (the container: its one VM); () = all
    ready_vm: str | None = None  # what /readyz checks; default: the only VM of `vms`
    stop_timeout_s: float = Field(60.0, gt=0, le=3600)
    status_ttl_s: float = Field(1.0, ge=0, le=60)  # GET results are reused this long at most
    workers: int = Field(8, ge=2, le=64)  # threads for blocking libvirt calls
    peers: tuple[str, ...] = ()  # other virtainer APIs that GET /v1/fleet lists too (VIRTAINER_API_PEERS)

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, peers: object) -> object:
        return tuple(peers.replace(",", " ").split()) if isinstance(peers, str) else peers

    @field_validator("peers")
    @classmethod
    def _peer_urls(cls, peers: tuple[str, ...]) -> tuple[str, ...]:
        for url in peers:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"http:// or https:// URLs separated by blanks or commas, not {url[:60]!r}")
        return peers

    # what the API refuses before it reads (gate.py, protocol.py)
    public_reads: bool = False  # True: GET routes answer without the token
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)  # larger bodies: 413, never read whole
    max_connections: int = Field(16384, ge=8, le=1 << 20)  # open sockets; more: 503 and closed
    max_requests: int = Field(128, ge=1, le=65536)  # requests in progress (health excepted); more: 503
    max_event_streams: int = Field(32, ge=0, le=65536)  # open /v1/events streams; more: 429
    header_timeout_s: float = Field(10.0, gt=0, le=600)  # request line + headers; slower: 408
    body_timeout_s: float = Field(10.0, gt=0, le=600)  # the whole body; slower: 408
    refuse_local_peers: bool = False  # the container under user-mode networking (protocol.py)
    metrics_auth: bool = True  # GET /metrics needs the token (False: open to any scraper)
    metrics_ttl_s: float = Field(1.0, ge=0, le=300)  # one libvirt read serves scrapes this long
    ui: bool = True  # the web UI at / (off: the REST API alone)
    docker: bool = False  # manager mode: the Docker engine's virtainer containers (/v1/containers)

    @field_validator("token")
    @classmethod
    def _no_placeholder(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        value = token.get_secret_value()
        if len(value) < 16 or value.lower() in _PLACEHOLDERS:
            raise ValueError("at least 16 characters, not a placeholder (or unset: one is generated)")
        return token

    @field_validator("listen")
    @classmethod
    def _an_address(cls, listen: str) -> str:
        try:
            ipaddress.ip_address(listen)
        except ValueError:
            if listen != "localhost":
                raise ValueError("an IPv4 or IPv6 address of this host (e.g. 127.0.0.1, 0.0.0.0, ::)") from None
        return listen

    @property
    def readiness_vm(self) -> str | None:
        return self.ready_vm or (self.vms[0] if len(self.vms) == 1 else None)

    @classmethod
    def build(cls, names: Mapping[str, str] | None = None, **values: object) -> ApiSettings:
        """Like the constructor, but invalid values raise ConfigError (one line, names the setting
        as `names` spells it, e.g. its environment variable)."""
        try:
            return cls.model_validate({key: value for key, value in values.items() if value is not None})
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "api settings"
            shown = "***" if field == "token" else first.get("input")
            accepted = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError((names or {}).get(field, field), shown, accepted) from None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, flags: Mapping[str, str] | None = None, **overrides: object
    ) -> ApiSettings:
        """VIRTAINER_API_* variables; keyword overrides (CLI flags, named in errors as `flags`
        spells them) win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {field: env.get(name) or None for field, name in ENV_NAMES.items()}
        values["libvirt_uri"] = env.get("VIRTAINER_LIBVIRT_URI") or env.get("LIBVIRT_DEFAULT_URI")
        given = {key: value for key, value in overrides.items() if value is not None}
        flag_names = flags or {}
        names = {field: flag_names.get(field, field) if field in given else name for field, name in ENV_NAMES.items()}
        values.update(given)
        return cls.build(names, **values)

    def check_listen(self, names: Mapping[str, str] | None = None) -> None:
        """Refuse, before anything starts, an address this host does not have or a port another
        process holds (uvicorn would find out only once the VM runs, in lines of its own)."""
        family = socket.AF_INET6 if ":" in self.listen else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.listen, self.port))
            except OSError as error:
                named = names or ENV_NAMES
                if error.errno == errno.EADDRINUSE:
                    raise ConfigError(named["port"], self.port, "a port no other process listens on") from None
                raise ConfigError(named["listen"], self.listen, f"an address of this host ({error.strerror})") from None


ENV_NAMES = {
    "listen": "VIRTAINER_API_LISTEN",
    "port": "VIRTAINER_API_PORT",
    "token": "VIRTAINER_API_TOKEN",
    "token_file": "VIRTAINER_API_TOKEN_FILE",
    "public_reads": "VIRTAINER_API_PUBLIC_READS",
    "max_body_bytes": "VIRTAINER_API_MAX_BODY",
    "max_connections": "VIRTAINER_API_MAX_CONNECTIONS",
    "max_requests": "VIRTAINER_API_MAX_REQUESTS",
    "max_event_streams": "VIRTAINER_API_MAX_EVENT_STREAMS",
    "header_timeout_s": "VIRTAINER_API_HEADER_TIMEOUT",
    "body_timeout_s": "VIRTAINER_API_BODY_TIMEOUT",
    "peers": "VIRTAINER_API_PEERS",
    "metrics_auth": "VIRTAINER_API_METRICS_AUTH",
    "metrics_ttl_s": "VIRTAINER_API_METRICS_TTL",
    "ui": "VIRTAINER_API_UI",
    "docker": "VIRTAINER_API_DOCKER",
}
