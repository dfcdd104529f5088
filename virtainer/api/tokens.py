"""The API's bearer token: from the settings, else stored 0600, else generated and announced once.

No FastAPI here: the container settles its token at start, long before the API itself loads.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from virtainer.files import write_atomic

if TYPE_CHECKING:
    from virtainer.api.settings import ApiSettings


def resolve_token(settings: ApiSettings, announce: Callable[[str], None]) -> str:
    """The configured token; else the stored one; else a new one, stored 0600 and announced."""
    configured = settings.token.get_secret_value() if settings.token is not None else None
    return settle_token(configured, settings.token_file, announce)


def settle_token(configured: str | None, token_file: Path, announce: Callable[[str], None]) -> str:
    """resolve_token from the two settings it reads (the container has no ApiSettings yet)."""
    if configured is not None:
        return configured
    stored = _read_private(token_file)
    if stored:
        return stored
    token = secrets.token_urlsafe(32)
    _write_private(token_file, token + "\n")
    announce(f"API token (shown once, kept in {token_file}, mode 0600): {token}")
    return token


def _read_private(path: Path) -> str | None:
    """A stored token counts only if nobody but its owner can read it."""
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077 == 0:
            return path.read_text().strip() or None
    return None


def _write_private(path: Path, text: str) -> None:
    write_atomic(path, text, mode=0o600)
