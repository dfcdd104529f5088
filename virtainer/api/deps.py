"""Typed dependencies for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from virtainer.api.backend import Backend
from virtainer.api.models import NAME_PATTERN


def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


BackendDep = Annotated[Backend, Depends(get_backend)]
VmName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="VM (domain) name")]
SnapName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="snapshot name")]
