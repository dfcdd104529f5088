"""Schema-driven fuzzing of the OpenAPI document with schemathesis, against the live server
serving a running tiny guest: at least 1000 generated requests, valid and invalid, none of them
answered with a 5xx, and none of the unauthenticated ones changing anything."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.api.conftest import ApiServer, TinyVm

pytestmark = pytest.mark.guest
EXAMPLES_PER_OPERATION = 60  # per operation and mode; 13 operations (the endless event stream is left out)
CASES: list[tuple[str, str, int]] = []


@pytest.fixture(scope="module")
def state_before(api: ApiServer, tiny_vm: TinyVm) -> tuple[object, ...]:
    with api.client() as http:  # one snapshot, so snapshot routes have something real to hit
        assert http.post(f"/v1/vms/{tiny_vm.name}/snapshots", json={"name": "fuzz-keep"}).status_code == 201
    return observable(api, tiny_vm)


def observable(api: ApiServer, tiny_vm: TinyVm) -> tuple[object, ...]:
    with api.client() as http:
        vm = http.get(f"/v1/vms/{tiny_vm.name}").json()
        snapshots = http.get(f"/v1/vms/{tiny_vm.name}/snapshots").json()
    return vm["state"], tiny_vm.serial_log.count("GUEST-DISK-BOOTS="), [snap["name"] for snap in snapshots]


def operations(api: ApiServer) -> list[schemathesis.APIOperation]:
    document = f"{api.url}/openapi.json"  # the document itself is behind the token too
    schema = schemathesis.openapi.from_url(document, headers={"Authorization": f"Bearer {api.token}"})
    schema = schema.exclude(path="/v1/events")
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, examples: int, **fixed: object) -> None:
    """Hypothesis drives one operation's strategy; every response is checked against the schema."""

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))  # type: ignore[arg-type]
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case) -> None:
        response = case.call(timeout=60)
        CASES.append((case.method, operation.path, response.status_code))
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
        case.validate_response(response)

    run()


def has_inputs(operation: schemathesis.APIOperation) -> bool:
    return "{" in operation.path or operation.method.upper() != "GET" or operation.path == "/v1/events"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_without_a_valid_token(api: ApiServer, mode: GenerationMode, state_before: tuple[object, ...]) -> None:
    for operation in operations(api):
        if mode == GenerationMode.NEGATIVE and not has_inputs(operation):
            continue  # nothing to make invalid
        fuzz(operation, mode, EXAMPLES_PER_OPERATION)


def test_fuzz_the_real_vm_without_a_valid_token(
    api: ApiServer, tiny_vm: TinyVm, state_before: tuple[object, ...]
) -> None:
    """The same, with the VM name fixed to the real, running VM: reads and writes are refused."""
    for operation in operations(api):
        if "{name}" in operation.path:
            fuzz(
                operation, GenerationMode.POSITIVE, EXAMPLES_PER_OPERATION // 2, path_parameters={"name": tiny_vm.name}
            )


def test_enough_cases_and_nothing_changed(api: ApiServer, tiny_vm: TinyVm, state_before: tuple[object, ...]) -> None:
    assert len(CASES) >= 1000, len(CASES)
    assert not [case for case in CASES if case[2] >= 500]
    assert {method for method, _, _ in CASES} >= {"GET", "POST", "DELETE"}
    assert observable(api, tiny_vm) == state_before
