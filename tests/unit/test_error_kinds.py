"""Error kinds: the core's errors carry one; the API and the command line each map it once."""

from __future__ import annotations

import pytest

from virtainer import errors
from virtainer.api.routes.health import NotReady
from virtainer.api.statuses import ANSWERS, kind_of_answer
from virtainer.controller.preflight import ContainerSetupError
from virtainer.exit_codes import EXIT_STATUS, exit_status
from virtainer.readiness import StageFailed

# (error, HTTP status, API code, exit status): what users and clients have always seen
SEEN = [
    (errors.VirtainerError("x"), 500, "internal", 1),
    (errors.ConfigError("memory", "x", "a size"), 422, "invalid_config", 2),
    (errors.NotFoundError("x"), 404, "not_found", 5),
    (errors.ConflictError("x"), 409, "conflict", 4),
    (errors.BaseMismatchError("x"), 409, "base_mismatch", 2),
    (errors.AgentUnavailableError("x"), 409, "conflict", 4),
    (errors.WaitTimeout("x"), 504, "timeout", 3),
    (errors.AuthError("x"), 401, "unauthorized", 1),
    (errors.ImageError("x"), 500, "image_error", 1),
    (errors.HypervisorError("x"), 500, "hypervisor_error", 1),
    (NotReady("x"), 503, "not_ready", 1),
    (StageFailed("x"), 500, "internal", 1),
    (ContainerSetupError("x"), 422, "invalid_config", 2),
]


@pytest.mark.parametrize(("error", "status", "code", "exit_code"), SEEN, ids=lambda item: type(item).__name__)
def test_each_error_answers_and_exits_by_its_kind(
    error: errors.VirtainerError, status: int, code: str, exit_code: int
) -> None:
    assert ANSWERS[error.kind] == (status, code)
    assert exit_status(error) == exit_code


def test_every_kind_has_an_answer_and_an_exit_status() -> None:
    assert set(ANSWERS) == set(errors.ErrorKind) == set(EXIT_STATUS)
    assert len(set(ANSWERS.values())) == len(ANSWERS)  # an answer names its kind


@pytest.mark.parametrize("kind", list(errors.ErrorKind))
def test_an_answer_reads_back_as_its_kind(kind: errors.ErrorKind) -> None:
    assert kind_of_answer(*ANSWERS[kind]) is kind


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (422, "invalid_input", errors.ErrorKind.INVALID),  # request validation
        (403, "forbidden", errors.ErrorKind.UNAUTHORIZED),
        (409, "something_new", errors.ErrorKind.CONFLICT),  # the status' most general kind
        (500, None, errors.ErrorKind.FAILED),
        (413, "body_too_large", errors.ErrorKind.FAILED),
    ],
)
def test_other_answers_read_back_by_status(status: int, code: str | None, kind: errors.ErrorKind) -> None:
    assert kind_of_answer(status, code) is kind


def test_an_instance_may_carry_another_kind() -> None:
    remote = errors.VirtainerError("no VM named 'x'", kind=errors.ErrorKind.NOT_FOUND)
    assert (remote.kind, exit_status(remote), errors.VirtainerError("y").kind) == (
        errors.ErrorKind.NOT_FOUND, 5, errors.ErrorKind.FAILED,
    )  # fmt: skip


def test_the_core_knows_no_exit_status() -> None:
    """The exit statuses are the command line's (exit_codes.py); errors.py no longer re-exports them."""
    assert not [name for name in vars(errors) if name.startswith("EXIT_")]
    with pytest.raises(ImportError):
        from virtainer.errors import EXIT_CONFIG  # noqa: F401
