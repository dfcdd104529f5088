"""The CLI's remote path (--api URL): an invalid VM or snapshot name is one line and exit 2,
refused before any request (a name is part of the URL path: `../x` would name another route)."""

from __future__ import annotations

import subprocess
import sys

import pytest

NOWHERE = ["--api", "http://127.0.0.1:9", "--token", "x" * 20]  # nothing listens: no call may be made
CASES = [
    ("snapshot", "create", "vm", "--name", "bad name"),
    ("snapshot", "create", "vm", "--name", "x" * 64),
    ("snapshot", "create", "vm", "--name", "ok", "--description", "d" * 1001),
    ("snapshot", "revert", "vm", "../../x"),
    ("snapshot", "delete", "vm", ""),
    ("snapshot", "revert", "vm", "snap?x=1"),
    ("snapshot", "list", "vm/../other"),
    ("stop", ".vm"),
    ("start", "vm\n"),
]


@pytest.mark.parametrize("args", CASES, ids=[" ".join(case)[:40] for case in CASES])
def test_invalid_names_on_the_remote_path_are_one_line_exit_2(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "virtainer.cli", *args, *NOWHERE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("virtainer: error: invalid "), done.stderr
    assert "cannot reach" not in done.stderr  # refused before any request
