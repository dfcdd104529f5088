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
    if settings.token is not None:
        return settings.token.get_secret_value()
    stored = _read_private(settings.token_file)
    if stored:
        return stored
    token = secrets.token_urlsafe(32)
    _write_private(settings.token_file, token + "\n")
    announce(f"API token (shown once, kept in {settings.token_file}, mode 0600): {token}")
    return token


def _read_private(path: Path) -> str | None:
    """A stored token counts only if nobody but its owner can read it."""
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077 == 0:
            return path.read_text().strip() or None
    return None


def _write_private(path: Path, text: str) -> None:
    write_atomic(path, text, mode=0o600)
