"""The CLI's remote path (--api URL): an invalid VM or snapshot name is one line and exit 2,
refused before any request (a name is part of the URL path: `../x` would name another route)."""

from __future__ import annotations

import pytest

from virtainer import cli

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
def test_invalid_names_on_the_remote_path_are_one_line_exit_2(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    # in-process (the process's own exit and output are tests/unit/test_one_line.py's)
    try:
        code = cli.main([*args, *NOWHERE])
    except SystemExit as exited:
        code = exited.code
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("virtainer: error: invalid "), stderr
    assert "cannot reach" not in stderr  # refused before any request
