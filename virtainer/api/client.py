"""The CLI's view of VM operations: local libvirt, or a running API (URL + token) over HTTP.

Both return the core's dataclasses (virtainer.operations, virtainer.snapshots): the local client
calls the operations, the remote one reads the API's JSON back into the same types. So
`virtainer stop` prints the same thing either way, and remote errors come back as VirtainerErrors
of the kind the answer names (and so the same exit codes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from virtainer import errors, operations, snapshots
from virtainer.api.statuses import kind_of_answer
from virtainer.hypervisor import Hypervisor

if TYPE_CHECKING:
    import httpx
    from pydantic import TypeAdapter

T = TypeVar("T")


class VmClient(Protocol):
    def start(self, vm: str) -> operations.OperationResult: ...
    def stop(self, vm: str, timeout_s: float) -> operations.OperationResult: ...
    def reboot(self, vm: str) -> operations.OperationResult: ...
    def create_snapshot(
        self, vm: str, name: str | None, kind: snapshots.SnapshotKind, description: str
    ) -> snapshots.Snapshot: ...
    def list_snapshots(self, vm: str) -> list[snapshots.Snapshot]: ...
    def revert_snapshot(self, vm: str, snapshot: str) -> snapshots.RevertResult: ...
    def delete_snapshot(self, vm: str, snapshot: str) -> None: ...


class LocalClient:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv

    def start(self, vm: str) -> operations.OperationResult:
        return operations.start(self.hv, vm)

    def stop(self, vm: str, timeout_s: float) -> operations.OperationResult:
        return operations.stop(self.hv, vm, timeout_s)

    def reboot(self, vm: str) -> operations.OperationResult:
        return operations.reboot(self.hv, vm)

    def create_snapshot(
        self, vm: str, name: str | None, kind: snapshots.SnapshotKind, description: str
    ) -> snapshots.Snapshot:
        return operations.create_snapshot(self.hv, vm, name, kind, description)

    def list_snapshots(self, vm: str) -> list[snapshots.Snapshot]:
        return operations.list_snapshots(self.hv, vm)

    def revert_snapshot(self, vm: str, snapshot: str) -> snapshots.RevertResult:
        return operations.revert_snapshot(self.hv, vm, snapshot)

    def delete_snapshot(self, vm: str, snapshot: str) -> None:
        operations.delete_snapshot(self.hv, vm, snapshot)


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

    def _read(self, kind: type[T], method: str, path: str, json: Any = None) -> T:
        """The answer as the core's dataclass `kind` (ValueError when it is not one)."""
        adapter: TypeAdapter[T] = _adapter(kind)
        return adapter.validate_python(self._call(method, path, json))

    def list_vms(self) -> list[operations.VmStatus]:
        return self._read(list[operations.VmStatus], "GET", "/v1/vms")

    def start(self, vm: str) -> operations.OperationResult:
        return self._read(operations.OperationResult, "POST", f"/v1/vms/{vm}/start")

    def stop(self, vm: str, timeout_s: float) -> operations.OperationResult:
        return self._read(operations.OperationResult, "POST", f"/v1/vms/{vm}/stop", {"timeout_s": timeout_s})

    def reboot(self, vm: str) -> operations.OperationResult:
        return self._read(operations.OperationResult, "POST", f"/v1/vms/{vm}/reboot")

    def create_snapshot(
        self, vm: str, name: str | None, kind: snapshots.SnapshotKind, description: str
    ) -> snapshots.Snapshot:
        body = {"name": name, "kind": kind, "description": description}
        request = {key: value for key, value in body.items() if value is not None}
        return self._read(snapshots.Snapshot, "POST", f"/v1/vms/{vm}/snapshots", request)

    def list_snapshots(self, vm: str) -> list[snapshots.Snapshot]:
        return self._read(list[snapshots.Snapshot], "GET", f"/v1/vms/{vm}/snapshots")

    def revert_snapshot(self, vm: str, snapshot: str) -> snapshots.RevertResult:
        return self._read(snapshots.RevertResult, "POST", f"/v1/vms/{vm}/snapshots/{snapshot}/revert")

    def delete_snapshot(self, vm: str, snapshot: str) -> None:
        self._call("DELETE", f"/v1/vms/{vm}/snapshots/{snapshot}")


_ADAPTERS: dict[object, TypeAdapter[Any]] = {}  # one per type: building one costs milliseconds


def _adapter(kind: Any) -> TypeAdapter[Any]:
    """pydantic's reader of the dataclass `kind` (the remote path only: a local command never
    loads pydantic)."""
    if kind not in _ADAPTERS:
        from pydantic import TypeAdapter

        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def _error_from(response: httpx.Response) -> errors.VirtainerError:
    """The error an answer carries, of the kind the API's table gives its status and code."""
    try:
        detail = response.json()["error"]
        message, hint, code = str(detail["message"]), detail.get("hint"), detail.get("code")
    except (ValueError, KeyError, TypeError):
        message, hint, code = f"HTTP {response.status_code}: {response.text[:200]}", None, None
    return errors.VirtainerError(message, hint=hint, kind=kind_of_answer(response.status_code, code))
