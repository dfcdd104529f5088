"""The container's API settings, checked in a forked child of the controller (api.container).

pydantic, which ApiSettings is built on, takes ~10 MiB of memory (its compiled core, its
modules): checked there, it never loads into the controller of a container whose API nobody
calls. The answer is JSON: what the container needs until the API's first connection (`ok`), or
the setting a ConfigError names (`invalid`), or that the API's packages are missing (`missing`).
"""

from __future__ import annotations

from virtainer.errors import ConfigError


def check_settings(environ: dict[str, str], vm: str) -> dict[str, object]:
    try:
        from virtainer.api.settings import ApiSettings
    except ImportError as error:
        return {"missing": str(error)}
    try:
        settings = ApiSettings.from_env(environ, vms=(vm,))
        settings.check_listen()
    except ConfigError as error:
        return {"invalid": [error.setting, error.value, error.accepted]}
    token = settings.token.get_secret_value() if settings.token is not None else None
    return {"ok": {"listen": settings.listen, "port": settings.port, "token": token,
                   "token_file": str(settings.token_file)}}  # fmt: skip
