"""Browser sessions for the web UI: the API token, typed once into the login form, becomes a
random session id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over TLS). The token itself
never travels in a URL, a cookie or a log line.

Sessions live in the server's memory (a restart logs browsers out). A request authenticated by
the cookie must come from the server's own origin: browsers send `Origin` on every cross-site
POST and on every websocket handshake, and a foreign one is refused (SameSite already keeps the
cookie off cross-site requests; this also covers websockets, which SameSite does not restrict).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Mapping, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

Scope = MutableMapping[str, Any]

COOKIE = "virtainer_session"
TTL_S = 12 * 3600


class Sessions:
    """Session ids by their sha256 (a memory dump or a timing probe does not reveal one)."""

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self._ttl_s = ttl_s
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self) -> str:
        session = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._expiry = {key: until for key, until in self._expiry.items() if until > now}
            self._expiry[_digest(session)] = now + self._ttl_s
        return session

    def valid(self, session: str | None) -> bool:
        if not session:
            return False
        with self._lock:
            until = self._expiry.get(_digest(session))
        return until is not None and until > time.monotonic()

    def end(self, session: str | None) -> None:
        if session:
            with self._lock:
                self._expiry.pop(_digest(session), None)


def _digest(session: str) -> str:
    return hashlib.sha256(session.encode()).hexdigest()


def session_cookie(headers: Mapping[bytes, bytes]) -> str | None:
    cookies = SimpleCookie()
    with contextlib.suppress(CookieError):
        cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
    morsel = cookies.get(COOKIE)
    return morsel.value if morsel is not None else None


def same_origin(scope: Scope) -> bool:
    """No Origin (a same-origin GET, a non-browser client), or exactly this server's."""
    headers: dict[bytes, bytes] = dict(scope["headers"])
    origin = headers.get(b"origin")
    if origin is None:
        return bool(scope["type"] != "websocket")  # browsers always send it on websockets
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return origin.decode("latin-1") == f"{scheme}://{headers.get(b'host', b'').decode('latin-1')}"


def cookie_authorized(scope: Scope, sessions: Sessions | None) -> bool:
    """A live session cookie, on a request (or websocket) from the server's own origin."""
    if sessions is None:
        return False
    return sessions.valid(session_cookie(dict(scope["headers"]))) and same_origin(scope)


def set_session_cookie(response: Response, connection: HTTPConnection, session: str) -> None:
    secure = connection.url.scheme == "https"
    response.set_cookie(COOKIE, session, max_age=TTL_S, path="/", secure=secure, httponly=True, samesite="strict")


def clear_session_cookie(response: Response, connection: HTTPConnection) -> None:
    secure = connection.url.scheme == "https"
    response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
