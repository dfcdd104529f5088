"""The web UI's login, session cookie and origin checks, on libvirt's in-process test driver
(test:///default). The real browser against real guests is tests/api/test_web_ui.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from virtainer.api.app import create_app
from virtainer.api.session import COOKIE, Sessions
from virtainer.api.settings import ApiSettings

TOKEN = "unit-session-" + "y" * 16
ORIGIN = {"Origin": "http://testserver"}


def client(tmp_path: Path, **settings: object) -> TestClient:
    values = {"libvirt_uri": "test:///default", "token": TOKEN, "token_file": tmp_path / "token", **settings}
    return TestClient(create_app(ApiSettings.build(**values)))


def test_sessions_expire_and_end() -> None:
    sessions = Sessions(ttl_s=60)
    first, second = sessions.create(), sessions.create()
    assert first != second and sessions.valid(first) and sessions.valid(second)
    sessions.end(first)
    assert not sessions.valid(first) and sessions.valid(second)
    assert not sessions.valid(None) and not sessions.valid("") and not sessions.valid("guess")
    assert not Sessions(ttl_s=0).valid(Sessions(ttl_s=0).create())


def test_login_sets_a_strict_httponly_cookie_without_the_token(tmp_path: Path) -> None:
    with client(tmp_path) as web:
        assert web.post("/ui/login", json={"token": "wrong-" + "z" * 16}).status_code == 401
        assert COOKIE not in web.cookies
        reply = web.post("/ui/login", json={"token": TOKEN})
        assert reply.status_code == 204
        cookie = reply.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over TLS the cookie is Secure
        assert TOKEN not in cookie
        assert web.get("/ui/session").json() == {"authenticated": True, "manager": False}
        # the cookie authorises operations from the page's own origin, not from another
        assert web.post("/v1/vms/test/reboot", headers=ORIGIN).status_code == 200
        assert web.post("/v1/vms/test/reboot", headers={"Origin": "http://evil.example"}).status_code == 401
        assert web.post("/ui/logout").status_code == 204
        assert web.get("/ui/session").json() == {"authenticated": False, "manager": False}
        assert web.post("/v1/vms/test/reboot", headers=ORIGIN).status_code == 401


def test_the_page_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    with client(tmp_path) as web:
        page = web.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text


def test_websockets_need_the_session_and_our_origin(tmp_path: Path) -> None:
    with client(tmp_path) as web:
        with pytest.raises(WebSocketDisconnect) as refused, web.websocket_connect("/v1/vms/test/console"):
            pass
        assert refused.value.code == 1008
        web.post("/ui/login", json={"token": TOKEN})
        for headers in ({}, {"Origin": "http://evil.example"}):  # browsers always send Origin on websockets
            with pytest.raises(WebSocketDisconnect), web.websocket_connect("/v1/vms/test/vnc", headers=headers):
                pass
        # our origin and the session: admitted; the test driver's VM has no VNC display
        vnc = "/v1/vms/test/vnc"
        with pytest.raises(WebSocketDisconnect) as no_display, web.websocket_connect(vnc, headers=ORIGIN):
            pass
        assert "no VNC display" in no_display.value.reason


def test_the_ui_can_be_turned_off_alone(tmp_path: Path) -> None:
    with client(tmp_path, ui=False) as web:
        assert web.get("/").status_code == 401  # no open paths: the gate asks for the token
        web.headers["Authorization"] = f"Bearer {TOKEN}"
        assert web.get("/").status_code == 404
        assert web.get("/ui/static/app.js").status_code == 404
        assert web.post("/ui/login", json={"token": TOKEN}).status_code == 404
        assert web.get("/v1/vms/test").status_code == 200


def test_settings_read_the_ui_switch_from_the_environment() -> None:
    assert ApiSettings.from_env({"VIRTAINER_API_UI": "0"}).ui is False
    assert ApiSettings.from_env({}).ui is True
    assert ApiSettings.from_env({"VIRTAINER_API_METRICS_AUTH": "false"}).metrics_auth is False
