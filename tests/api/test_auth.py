"""Auth on every route but health: no token and a wrong token are refused (401) and change
nothing; the right token works. A generated token is printed once and kept 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ApiServer, TinyVm, serving

pytestmark = pytest.mark.guest

SNAP = "auth-snap"
# every mutating route, in an order in which each succeeds with the right token
RIGHT_TOKEN_SEQUENCE = [
    ("POST", "/v1/vms/{name}/stop", {"timeout_s": 60}, 200),
    ("POST", "/v1/vms/{name}/snapshots", {"name": SNAP}, 201),
    ("POST", "/v1/vms/{name}/snapshots/{snapshot}/revert", None, 200),
    ("DELETE", "/v1/vms/{name}/snapshots/{snapshot}", None, 204),
    ("POST", "/v1/vms/{name}/start", None, 200),
    ("POST", "/v1/vms/{name}/reboot", None, 200),
    ("POST", "/v1/vms/{name}/destroy", None, 200),
]
WRONG_TOKENS = [None, "wrong-token", "x" * 500, "ünïcode", "Bearer"]


def observable_state(api: ApiServer, vm: str) -> tuple[str, list[str]]:
    with api.client() as http:
        state = http.get(f"/v1/vms/{vm}").json()["state"]
        snapshots = [snap["name"] for snap in http.get(f"/v1/vms/{vm}/snapshots").json()]
    return state, snapshots


def test_openapi_lists_exactly_these_mutating_routes_and_every_route_but_health_is_secured(api: ApiServer) -> None:
    with api.client() as http:
        document = http.get("/openapi.json").json()
    operations = {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    # the guest agent's routes (exec, keys, password) have tests of their own (test_guest_agent.py)
    mutating = {key for key, operation in operations.items() if key[0] != "GET" and "guest" not in operation["tags"]}
    assert mutating == {(method, path) for method, path, _, _ in RIGHT_TOKEN_SEQUENCE}
    for (method, path), operation in operations.items():
        if path in ("/healthz", "/readyz"):
            assert "security" not in operation
        else:
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
            assert "401" in operation["responses"]


def test_every_mutating_route_no_token_wrong_token_right_token(api: ApiServer, tiny_vm: TinyVm) -> None:
    for method, template, body, success in RIGHT_TOKEN_SEQUENCE:
        path = template.format(name=tiny_vm.name, snapshot=SNAP)
        before = observable_state(api, tiny_vm.name)
        for token in WRONG_TOKENS:
            headers = {"Authorization": f"Bearer {token}".encode()} if token is not None else {}
            response = httpx.request(method, api.url + path, json=body, headers=headers, timeout=30)
            assert response.status_code == 401, (method, path, token, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        basic = httpx.request(method, api.url + path, json=body, auth=("user", api.token), timeout=30)
        assert basic.status_code == 401  # the right secret in the wrong scheme is still no token
        assert observable_state(api, tiny_vm.name) == before, f"{method} {path} changed something without a token"
        with api.client() as http:
            response = http.request(method, path, json=body)
        assert response.status_code == success, (method, path, response.text)
    with api.client() as http:
        assert http.post(f"/v1/vms/{tiny_vm.name}/start").status_code == 200


def test_generated_token_is_printed_once_and_kept_private(tmp_path: Path, tiny_vm: TinyVm) -> None:
    directory = tmp_path / "gen"
    directory.mkdir()
    with serving(directory, tiny_vm.name) as first:
        token_file = directory / "api-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert first.output().count(first.token) == 1
        with first.client() as http:  # the generated token works
            assert http.post(f"/v1/vms/{tiny_vm.name}/snapshots/none/revert").status_code == 404
    with serving(directory, tiny_vm.name) as second:  # a restart keeps it, and does not print it again
        assert second.token == first.token
        assert first.token not in second.output()


def test_placeholder_token_is_refused_at_start(tmp_path: Path) -> None:
    import subprocess

    from tests.api.conftest import VIRTAINER

    env = {"VIRTAINER_API_TOKEN": "changeme", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*VIRTAINER, "serve", "--port", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "VIRTAINER_API_TOKEN" in done.stderr and "changeme" not in done.stderr
