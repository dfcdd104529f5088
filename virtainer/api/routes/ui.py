"""The web UI: `/` (one page, virtainer/api/ui/), the login that turns the API token into a
session cookie, and the page's static files (its own, and the vendored noVNC and xterm.js)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import Field

from virtainer.api.auth import check_credentials, token_matches
from virtainer.api.models import Model
from virtainer.api.session import COOKIE, clear_session_cookie, cookie_authorized, set_session_cookie
from virtainer.errors import AuthError

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
# the page and everything it loads come from this server; nothing inline but styles set by noVNC/xterm
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(tags=["web UI"], include_in_schema=False)
OPEN_PATHS = frozenset({"/", "/ui/login", "/ui/logout", "/ui/session"})


def is_open(path: str) -> bool:
    """What the gate lets through without credentials: the page, its assets, the login."""
    return path in OPEN_PATHS or path.startswith("/ui/static/")


class Login(Model):
    token: str = Field(min_length=1, max_length=4096)


class SessionState(Model):
    authenticated: bool
    manager: bool  # manager mode: the page shows the engine's VM containers


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.post("/ui/login", status_code=status.HTTP_204_NO_CONTENT)
async def login(body: Login, request: Request) -> Response:
    """The token, in the request body only, for a session cookie."""
    if not token_matches(request, body.token):
        raise AuthError("the API token is not valid", hint="the token virtainer serve printed, or VIRTAINER_API_TOKEN")
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    set_session_cookie(response, request, request.app.state.sessions.create())
    return response


@router.post("/ui/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request) -> Response:
    request.app.state.sessions.end(request.cookies.get(COOKIE))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_session_cookie(response, request)
    return response


@router.get("/ui/session")
async def session(request: Request) -> JSONResponse:
    """Whether this browser is logged in (the gate lets this path through either way)."""
    try:
        in_session = cookie_authorized(request.scope, request.app.state.sessions)
        check_credentials(dict(request.scope["headers"]), request.app.state.token, session=in_session)
        authenticated = True
    except AuthError:
        authenticated = False
    state = SessionState(authenticated=authenticated, manager=request.app.state.settings.docker)
    return JSONResponse(state.model_dump(), headers={"Cache-Control": "no-store"})
