"""Bearer tokens: one per server, from the settings or generated once and kept 0600.

`check_credentials` is the one place a request's credentials are judged: the gate (gate.py)
calls it with the request's headers before a byte of the body is read. Another kind of
credential (a session cookie) belongs here too, beside the bearer token.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from virtainer.api.tokens import resolve_token
from virtainer.errors import AuthError

__all__ = ["bearer", "check_credentials", "resolve_token", "token_matches"]

bearer = HTTPBearer(
    auto_error=False,
    description="Every route but /healthz and /readyz needs `Authorization: Bearer <token>` "
    "(VIRTAINER_API_TOKEN, or the token the server generated and printed once at start); "
    "VIRTAINER_API_PUBLIC_READS=1 opens the GET routes.",
)


def check_credentials(headers: Mapping[bytes, bytes], expected: str, *, session: bool = False) -> None:
    """Raise AuthError unless the request carries the right token, or (session=True: the gate
    found a live web UI session cookie from this server's origin, session.py) no Authorization
    header at all. Headers are raw ASGI header names (lower case) and values. Compared in
    constant time."""
    authorization = headers.get(b"authorization")
    if authorization is None:
        if session:
            return
        raise AuthError("this route needs a bearer token", hint="send Authorization: Bearer <token>")
    scheme, _, credentials = authorization.partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        raise AuthError("this route needs a bearer token", hint="send Authorization: Bearer <token>")
    if not hmac.compare_digest(credentials.strip(), expected.encode()):
        raise AuthError("the bearer token is not valid")


def token_matches(connection: HTTPConnection, candidate: str) -> bool:
    """The web UI's login: the typed token against the server's, in constant time."""
    expected: str = connection.app.state.token
    return hmac.compare_digest(candidate.encode(), expected.encode())
