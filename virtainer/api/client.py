"""The CLI's view of VM operations: local libvirt, or a running API (URL + token) over HTTP.

Both return the API's models, so `virtainer stop` prints the same thing either way. Remote
errors come back as VirtainerErrors of the kind the answer names (and so the same exit codes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, TypeAdapter

from virtainer import errors
from virtainer.api import actions, models
from virtainer.api.statuses import kind_of_answer
from virtainer.hypervisor import Hypervisor

if TYPE_CHECKING:
    import httpx

M = TypeVar("M", bound=BaseModel)


class VmClient(Protocol):
    def start(self, vm: str) -> models.OperationResult: ...
    def stop(self, vm: str, timeout_s: float) -> models.OperationResult: ...
    def reboot(self, vm: str) -> models.OperationResult: ...
    def create_snapshot(self, vm: str, request: models.SnapshotCreate) -> models.SnapshotPublic: ...
    def list_snapshots(self, vm: str) -> list[models.SnapshotPublic]: ...
    def revert_snapshot(self, vm: str, snapshot: str) -> models.RevertResult: ...
    def delete_snapshot(self, vm: str, snapshot: str) -> None: ...


class LocalClient:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv

    def start(self, vm: str) -> models.OperationResult:
        return actions.start(self.hv, vm)

    def stop(self, vm: str, timeout_s: float) -> models.OperationResult:
        return actions.stop(self.hv, vm, timeout_s)

    def reboot(self, vm: str) -> models.OperationResult:
        return actions.reboot(self.hv, vm)

    def create_snapshot(self, vm: str, request: models.SnapshotCreate) -> models.SnapshotPublic:
        return actions.create_snapshot(self.hv, vm, request)

    def list_snapshots(self, vm: str) -> list[models.SnapshotPublic]:
        return actions.list_snapshots(self.hv, vm)

    def revert_snapshot(self, vm: str, snapshot: str) -> models.RevertResult:
        return actions.revert_snapshot(self.hv, vm, snapshot)

    def delete_snapshot(self, vm: str, snapshot: str) -> None:
        actions.delete_snapshot(self.hv, vm, snapshot)


class RemoteClient:
    def __init__(self, url: str, token: str | None, *, timeout_s: float = 3700.0) -> None:
        import httpx  # here, not at module level: every `virtainer` command would pay for it

        self._http_error = httpx.HTTPError
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        try:
            response = self.http.request(method, path, json=json)
        except self._http_error as error:
            raise errors.VirtainerError(f"cannot reach the API at {self.http.base_url}: {error}") from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response.json() if response.content else None

    def _model(self, kind: type[M], method: str, path: str, json: Any = None) -> M:
        return kind.model_validate(self._call(method, path, json))

    def list_vms(self) -> list[models.VmPublic]:
        return TypeAdapter(list[models.VmPublic]).validate_python(self._call("GET", "/v1/vms"))

    def start(self, vm: str) -> models.OperationResult:
        return self._model(models.OperationResult, "POST", f"/v1/vms/{vm}/start")

    def stop(self, vm: str, timeout_s: float) -> models.OperationResult:
        return self._model(models.OperationResult, "POST", f"/v1/vms/{vm}/stop", {"timeout_s": timeout_s})

    def reboot(self, vm: str) -> models.OperationResult:
        return self._model(models.OperationResult, "POST", f"/v1/vms/{vm}/reboot")

    def create_snapshot(self, vm: str, request: models.SnapshotCreate) -> models.SnapshotPublic:
        body = request.model_dump(exclude_none=True)
        return self._model(models.SnapshotPublic, "POST", f"/v1/vms/{vm}/snapshots", body)

    def list_snapshots(self, vm: str) -> list[models.SnapshotPublic]:
        adapter = TypeAdapter(list[models.SnapshotPublic])
        return adapter.validate_python(self._call("GET", f"/v1/vms/{vm}/snapshots"))

    def revert_snapshot(self, vm: str, snapshot: str) -> models.RevertResult:
        return self._model(models.RevertResult, "POST", f"/v1/vms/{vm}/snapshots/{snapshot}/revert")

    def delete_snapshot(self, vm: str, snapshot: str) -> None:
        self._call("DELETE", f"/v1/vms/{vm}/snapshots/{snapshot}")


def _error_from(response: httpx.Response) -> errors.VirtainerError:
    """The error an answer carries, of the kind the API's table gives its status and code."""
    try:
        detail = response.json()["error"]
        message, hint, code = str(detail["message"]), detail.get("hint"), detail.get("code")
    except (ValueError, KeyError, TypeError):
        message, hint, code = f"HTTP {response.status_code}: {response.text[:200]}", None, None
    return errors.VirtainerError(message, hint=hint, kind=kind_of_answer(response.status_code, code))
