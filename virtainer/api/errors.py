"""One JSON error shape for every failure: {"error": {"code", "message", "hint"}}.

The core raises its own errors (VirtainerError, with a kind); they become answers here and
nowhere else, through the one kind -> status table (virtainer/api/statuses.py). Request
validation, unknown routes and unexpected bugs get the same shape.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from virtainer import errors
from virtainer.api.models import ErrorBody
from virtainer.api.statuses import ANSWERS

log = logging.getLogger("virtainer.api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}

_DESCRIPTIONS = {
    401: "missing or invalid bearer token",
    408: "the request's headers or body came too slowly",
    413: "the body is larger than the limit",
    429: "too many event streams are open",
    404: "unknown VM or snapshot",
    409: "the VM is in the wrong state, or busy with another operation",
    422: "invalid input",
    500: "libvirt or QEMU failed",
    503: "not ready, or too many requests in progress",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers a route can give (all in one shape)."""
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses}


def error_body(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "hint": hint}}


def error_bytes(code: str, message: str, hint: str | None = None) -> bytes:
    """The same shape, encoded: for answers given below FastAPI (gate.py, protocol.py)."""
    return json.dumps(error_body(code, message, hint)).encode()


def error_response(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="virtainer"'} if status == 401 else None
    return JSONResponse(error_body(code, message, hint), status_code=status, headers=headers)


async def _virtainer_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, errors.VirtainerError)
    status, code = ANSWERS[error.kind]
    if status >= 500:
        log.warning("%s: %s", type(error).__name__, error)
    return error_response(status, code, error.message, error.hint)


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return error_response(422, "invalid_input", f"{where}: {first.get('msg')}{more}")


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    if error.status_code == 400:  # an unparsable body is invalid input, like any other (422)
        return error_response(422, "invalid_input", f"body: {error.detail}")
    code = _HTTP_CODES.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail))


async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=error)
    return error_response(500, "internal", "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.VirtainerError, _virtainer_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
