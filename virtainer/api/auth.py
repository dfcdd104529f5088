"""Bearer tokens: one per server, from the settings or generated once and kept 0600.

`check_credentials` is the one place a request's credentials are judged: the gate (gate.py)
calls it with the request's headers before a byte of the body is read. Another kind of
credential (a session cookie) belongs here too, beside the bearer token.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from fastapi.security import HTTPBearer

from virtainer.api.settings import ApiSettings
from virtainer.errors import AuthError
from virtainer.files import write_atomic

bearer = HTTPBearer(
    auto_error=False,
    description="Every route but /healthz and /readyz needs `Authorization: Bearer <token>` "
    "(VIRTAINER_API_TOKEN, or the token the server generated and printed once at start); "
    "VIRTAINER_API_PUBLIC_READS=1 opens the GET routes.",
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


def check_credentials(headers: Mapping[bytes, bytes], expected: str) -> None:
    """Raise AuthError unless the request carries the right token. Headers are raw ASGI header
    names (lower case) and values. Compared in constant time."""
    authorization = headers.get(b"authorization")
    if authorization is None:
        raise AuthError("this route needs a bearer token", hint="send Authorization: Bearer <token>")
    scheme, _, credentials = authorization.partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        raise AuthError("this route needs a bearer token", hint="send Authorization: Bearer <token>")
    if not hmac.compare_digest(credentials.strip(), expected.encode()):
        raise AuthError("the bearer token is not valid")
