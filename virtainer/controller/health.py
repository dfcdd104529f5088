"""The ready file: present exactly while the VM has reached every readiness stage it waits for.

The image's HEALTHCHECK only tests that the file exists (no Python started every few seconds).
Written atomically (temporary file + rename), so a reader never sees it half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

from virtainer.readiness import Readiness


class ReadyFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self, readiness: Readiness) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.tmp")
        temp.write_text(readiness.to_json())
        os.replace(temp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_marked(self) -> bool:
        return self.path.exists()
