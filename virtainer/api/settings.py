"""The API's settings: one validated object, from keyword arguments or the environment."""

from __future__ import annotations

import os
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

    @field_validator("token")
    @classmethod
    def _no_placeholder(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        value = token.get_secret_value()
        if len(value) < 16 or value.lower() in _PLACEHOLDERS:
            raise ValueError("at least 16 characters, not a placeholder (or unset: one is generated)")
        return token

    @property
    def readiness_vm(self) -> str | None:
        return self.ready_vm or (self.vms[0] if len(self.vms) == 1 else None)

    @classmethod
    def build(cls, **values: object) -> ApiSettings:
        """Like the constructor, but invalid values raise ConfigError (one line, names the setting)."""
        try:
            return cls(**{key: value for key, value in values.items() if value is not None})
        except ValidationError as error:
            first = error.errors()[0]
            setting = ".".join(str(part) for part in first["loc"]) or "api settings"
            shown = "***" if setting == "token" else first.get("input")
            raise ConfigError(setting, shown, first["msg"]) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ApiSettings:
        """VIRTAINER_API_* variables; keyword overrides (CLI flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "listen": env.get("VIRTAINER_API_LISTEN"),
            "port": env.get("VIRTAINER_API_PORT"),
            "libvirt_uri": env.get("VIRTAINER_LIBVIRT_URI") or env.get("LIBVIRT_DEFAULT_URI"),
            "token": env.get("VIRTAINER_API_TOKEN") or None,
            "token_file": env.get("VIRTAINER_API_TOKEN_FILE"),
            "peers": env.get("VIRTAINER_API_PEERS") or None,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.build(**values)
