"""The code base stays ruff-clean and `mypy --strict` clean (the project's style gates run with the
tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is part of the test extra (pip install -e .[test])"
    return found


def test_ruff_is_clean() -> None:
    done = subprocess.run(
        [tool("ruff"), "check", "--quiet", "--no-cache", "virtainer", "tests", "container", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_mypy_strict_is_clean() -> None:
    # the cache makes a second run take a second; a checkout the user cannot write keeps it in /tmp
    writable = os.access(ROOT, os.W_OK)
    cache = ROOT / ".mypy_cache" if writable else Path(tempfile.gettempdir()) / f"virtainer-mypy-{os.getuid()}"
    done = subprocess.run(
        [tool("mypy"), "--strict", "--cache-dir", str(cache), "virtainer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:]
