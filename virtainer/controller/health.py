"""The ready file: present exactly while the VM has reached every readiness stage it waits for.

The image's HEALTHCHECK only tests that the file exists (no Python started every few seconds).
Written atomically (temporary file + rename), so a reader never sees it half-written.
"""

from __future__ import annotations

from pathlib import Path

from virtainer.files import write_atomic
from virtainer.readiness import Readiness


class ReadyFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self, readiness: Readiness) -> None:
        write_atomic(self.path, readiness.to_json())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_marked(self) -> bool:
        return self.path.exists()
