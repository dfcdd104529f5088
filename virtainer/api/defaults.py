"""Defaults shared by the API's settings and the container seam (no third-party imports here:
the container controller reads them before it knows whether FastAPI is installed)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_PORT = 8470
DEFAULT_TOKEN_FILE = Path("/var/lib/virtainer/api-token")
