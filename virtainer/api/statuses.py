"""The REST API's one table from an error's kind to its answer: HTTP status and error code.

No FastAPI here: the CLI's remote client reads answers back into kinds with the same table, so
`virtainer stop --api URL` exits as the local command would.
"""

from __future__ import annotations

from virtainer.errors import ErrorKind

# per status, the most general kind first: an answer with an unknown code is read as that one
ANSWERS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.FAILED: (500, "internal"),
    ErrorKind.IMAGE: (500, "image_error"),
    ErrorKind.HYPERVISOR: (500, "hypervisor_error"),
    ErrorKind.INVALID: (422, "invalid_config"),
    ErrorKind.NOT_FOUND: (404, "not_found"),
    ErrorKind.CONFLICT: (409, "conflict"),
    ErrorKind.BASE_MISMATCH: (409, "base_mismatch"),
    ErrorKind.TIMEOUT: (504, "timeout"),
    ErrorKind.UNAUTHORIZED: (401, "unauthorized"),
    ErrorKind.UNAVAILABLE: (503, "not_ready"),
}


def kind_of_answer(status: int, code: str | None) -> ErrorKind:
    """The kind an error answer stands for: by its code, else by its status (a 422 of request
    validation is invalid input, a 403 unauthorized), else a failure."""
    by_status = None
    for kind, answer in ANSWERS.items():
        if answer == (status, code):
            return kind
        if answer[0] == status and by_status is None:
            by_status = kind
    return by_status or (ErrorKind.UNAUTHORIZED if status == 403 else ErrorKind.FAILED)
