"""Every error has one JSON shape and an honest status code."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import ApiServer, TinyVm

pytestmark = pytest.mark.guest


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "hint"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message
    return str(message)


def test_not_found(api: ApiServer, tiny_vm: TinyVm) -> None:
    with api.client() as http:
        assert "no-such-vm" in error_of(http.get("/v1/vms/no-such-vm"), 404, "not_found")
        error_of(http.post("/v1/vms/no-such-vm/stop"), 404, "not_found")
        error_of(http.get("/v1/vms/no-such-vm/snapshots"), 404, "not_found")
        assert "nope" in error_of(http.get(f"/v1/vms/{tiny_vm.name}/snapshots/nope"), 404, "not_found")
        error_of(http.post(f"/v1/vms/{tiny_vm.name}/snapshots/nope/revert"), 404, "not_found")
        error_of(http.delete(f"/v1/vms/{tiny_vm.name}/snapshots/nope"), 404, "not_found")
        error_of(http.get("/v2/whatever"), 404, "not_found")


def test_a_vm_outside_the_served_set_is_not_found(api: ApiServer) -> None:
    import subprocess

    other = subprocess.run(["virsh", "-q", "list", "--all", "--name"], capture_output=True, text=True).stdout.split()
    with api.client() as http:
        for name in other[:3]:
            if name not in {vm["name"] for vm in http.get("/v1/vms").json()}:
                error_of(http.get(f"/v1/vms/{name}"), 404, "not_found")
                error_of(http.post(f"/v1/vms/{name}/destroy"), 404, "not_found")


def test_wrong_state_is_a_conflict(api: ApiServer, tiny_vm: TinyVm) -> None:
    vm = f"/v1/vms/{tiny_vm.name}"
    with api.client() as http:
        assert "already running" in error_of(http.post(f"{vm}/start"), 409, "conflict")
        assert http.post(f"{vm}/destroy").status_code == 200
        for operation in ("stop", "reboot", "destroy"):
            assert "shut-off" in error_of(http.post(f"{vm}/{operation}"), 409, "conflict")
        message = error_of(http.post(f"{vm}/snapshots", json={"kind": "memory"}), 409, "conflict")
        assert "memory snapshot needs a running VM" in message
        assert http.post(f"{vm}/start").status_code == 200
        # "index": a name that must not collide with the record's own files beside the diff
        assert http.post(f"{vm}/snapshots", json={"name": "index"}).status_code == 201
        assert "already has" in error_of(http.post(f"{vm}/snapshots", json={"name": "index"}), 409, "conflict")
        assert http.get(f"{vm}/snapshots/index").json()["current"] is True
        assert http.delete(f"{vm}/snapshots/index").status_code == 204


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/vms/-bad", None),
        ("GET", "/v1/vms/" + "a" * 64, None),
        ("POST", "/v1/vms/{vm}/snapshots", {"name": "bad name"}),
        ("POST", "/v1/vms/{vm}/snapshots", {"name": "../escape"}),
        ("POST", "/v1/vms/{vm}/snapshots", {"kind": "everything"}),
        ("POST", "/v1/vms/{vm}/snapshots", {"description": "x" * 1001}),
        ("POST", "/v1/vms/{vm}/snapshots", {"unknown": 1}),
        ("POST", "/v1/vms/{vm}/snapshots", [1, 2]),
        ("POST", "/v1/vms/{vm}/stop", {"timeout_s": -1}),
        ("POST", "/v1/vms/{vm}/stop", {"timeout_s": "soon"}),
        ("POST", "/v1/vms/{vm}/stop", {"timeout_s": 1e9}),
        ("GET", "/v1/vms/{vm}/snapshots/.hidden", None),
        ("GET", "/v1/events?vm=%00", None),
    ],
)
def test_invalid_input_is_422(api: ApiServer, tiny_vm: TinyVm, method: str, path: str, body: object) -> None:
    with api.client() as http:
        response = http.request(method, path.format(vm=tiny_vm.name), json=body)
    error_of(response, 422, "invalid_input")


def test_malformed_json_body_is_422(api: ApiServer, tiny_vm: TinyVm) -> None:
    with api.client() as http:
        headers = {"content-type": "application/json"}
        response = http.post(f"/v1/vms/{tiny_vm.name}/snapshots", content=b"{not json", headers=headers)
    error_of(response, 422, "invalid_input")


def test_method_not_allowed(api: ApiServer, tiny_vm: TinyVm) -> None:
    with api.client() as http:
        error_of(http.delete(f"/v1/vms/{tiny_vm.name}"), 405, "method_not_allowed")


def test_health_and_readiness(api: ApiServer, tiny_vm: TinyVm) -> None:
    with api.client(token=None) as http:
        assert http.get("/healthz").json() == {"status": "ok", "libvirt": True}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["vm"] == tiny_vm.name
        with api.client() as admin:
            assert admin.get("/docs").status_code == 200
            assert admin.get("/openapi.json").json()["info"]["title"] == "virtainer"
            assert admin.post(f"/v1/vms/{tiny_vm.name}/destroy").status_code == 200
            assert "waiting for" in error_of(http.get("/readyz"), 503, "not_ready")
            assert admin.post(f"/v1/vms/{tiny_vm.name}/start").status_code == 200
