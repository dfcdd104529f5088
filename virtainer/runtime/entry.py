"""What dockerd runs for `--runtime=virtainer`: runc's verbs virtainer leaves alone go to runc at once.

dockerd calls the runtime 3-5 times per `docker run` (create, start, state, kill, delete); only
create, run and exec rewrite anything. `virtainer runtime install` registers script(): Python
without `site` (-S: no site-packages scan, no .pth hooks) and exec_runc_verbs(), which needs nothing
beyond `os` and `sys` before it execs runc; virtainer's own verbs get `site` back and go on to
virtainer.runtime.cli. Measured in runtime_bench ("one runtime call").
"""

from __future__ import annotations

import os

# runc's global flags that take a value (everything else before the verb is a switch)
VALUED_GLOBALS = ("--root", "--log", "--log-format", "--criu", "--rootless")
# what virtainer.runtime.cli itself handles; every other verb is runc's own
OWN_VERBS = ("create", "run", "exec")
OWN_COMMANDS = ("install", "uninstall")  # `virtainer-runtime install|uninstall`


def verb_index(argv: list[str]) -> int:
    """Where the verb is: the first argument that is neither a global flag nor a global flag's
    value (len(argv) if there is none)."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 2 if argv[index] in VALUED_GLOBALS else 1
    return min(index, len(argv))


def verb(argv: list[str]) -> str:
    index = verb_index(argv)
    return argv[index] if index < len(argv) else ""


def find_runc() -> str | None:
    """VIRTAINER_RUNC, else runc on PATH (as shutil.which finds it, without shutil's or pathlib's
    imports: this runs before every runc verb)."""
    if found := os.environ.get("VIRTAINER_RUNC"):
        return found
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", "runc")  # noqa: PTH118
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):  # noqa: PTH112
            return candidate
    return None


def exec_runc_verbs(args: list[str]) -> None:
    """runc's own verbs become runc at once (when runc is found); returns for virtainer's."""
    runc = find_runc()
    if runc and verb(args) not in (*OWN_VERBS, *OWN_COMMANDS):
        os.execv(runc, [runc, *args])


def script(python: str) -> str:
    """The executable `virtainer runtime install` registers: this module under `python -S`."""
    from pathlib import Path  # here, not at the top: main() runs without it

    code = str(Path(__file__).resolve().parents[2])  # the directory virtainer is imported from
    return (
        f"#!{python} -S\n"
        "# written by `virtainer runtime install`: see virtainer/runtime/entry.py\n"
        "import sys\n"
        f"sys.path.append({code!r})\n"
        "from virtainer.runtime.entry import exec_runc_verbs\n"
        "exec_runc_verbs(sys.argv[1:])\n"
        "import site\n"  # virtainer's own verbs: its libraries are in site-packages
        "site.main()\n"
        "from virtainer.runtime.cli import main\n"
        "sys.exit(main())\n"
    )
