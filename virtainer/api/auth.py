"""Bearer tokens: one per server, from the settings or generated once and kept 0600."""

from __future__ import annotations

import contextlib
import hmac
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from virtainer.api.settings import ApiSettings
from virtainer.errors import AuthError
from virtainer.files import write_atomic

bearer = HTTPBearer(
    auto_error=False,
    description="Mutating routes need `Authorization: Bearer <token>` (VIRTAINER_API_TOKEN, or "
    "the token the server generated and printed once at start).",
)


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


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """No token, no mutation. Compared in constant time."""
    if credentials is None:
        raise AuthError("this operation needs a bearer token", hint="send Authorization: Bearer <token>")
    expected: str = request.app.state.token
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise AuthError("the bearer token is not valid")
