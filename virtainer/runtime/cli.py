"""`virtainer-runtime`: an OCI runtime with runc's command line, the executable dockerd calls.

`create` and `run` rewrite the bundle's config.json (virtainer.runtime.bundle) and hand over to runc;
every other verb (start, state, kill, delete, spec, ps, features...) is runc's own, with the same
global flags (--root, --log, --log-format, --systemd-cgroup...). Errors go where runc puts them:
one line on stderr and a JSON record in the --log file, which containerd's shim shows to the user.
`virtainer-runtime install|uninstall` registers the runtime with dockerd (virtainer.runtime.install).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from virtainer.errors import VirtainerError
from virtainer.runtime.entry import OWN_COMMANDS, find_runc, verb_index

EXIT_FAILED = 1


@dataclass
class Invocation:
    """runc's command line split into global flags, the verb and the verb's own arguments."""

    globals_: list[str] = field(default_factory=list)
    verb: str = ""
    args: list[str] = field(default_factory=list)

    def global_value(self, name: str) -> str | None:
        return _flag_value(self.globals_, name)

    def arg_value(self, *names: str) -> str | None:
        for name in names:
            if (value := _flag_value(self.args, name)) is not None:
                return value
        return None

    def argv(self) -> list[str]:
        return [*self.globals_, self.verb, *self.args]


def _flag_value(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def parse(argv: Sequence[str]) -> Invocation:
    args = list(argv)
    index = verb_index(args)
    if index == len(args):
        return Invocation(globals_=args)
    return Invocation(globals_=args[:index], verb=args[index], args=args[index + 1 :])


def runc_binary() -> str:
    found = find_runc()
    if not found:
        raise VirtainerError("runc is not installed", hint="apt-get install runc (docker.io brings it)")
    return found


def container_id(invocation: Invocation) -> str:
    """The last positional argument of create/run/exec (flags with values skipped)."""
    positional = [arg for arg in invocation.args if not arg.startswith("-")]
    if not positional:
        raise VirtainerError(f"{invocation.verb}: no container id given")
    return positional[-1]


def prepare_bundle(invocation: Invocation) -> None:
    """create/run: rewrite BUNDLE/config.json in place; the plan goes to BUNDLE/virtainer/."""
    from virtainer.runtime import artifacts, bundle
    from virtainer.runtime.timeline import write_create_times

    bundle_dir = Path(invocation.arg_value("--bundle", "-b") or Path.cwd()).resolve()
    config_path = bundle_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise VirtainerError(f"cannot read {config_path}: {error}") from None
    found = artifacts.find()
    run_dir = bundle_dir / "virtainer"
    code = Path(__file__).resolve().parent.parent
    paths = bundle.HostPaths(tree=found.tree, code=code, guest=found.guest, run=run_dir, shared=found.shared)
    new_config, plan = bundle.rewrite(config, bundle_dir, paths, container_id(invocation))
    run_dir.mkdir(mode=0o755, exist_ok=True)
    (run_dir / "plan.json").write_text(plan.to_json())
    write_create_times(run_dir)
    (bundle_dir / "config.json.orig").write_text(json.dumps(config))
    temporary = config_path.with_name("config.json.virtainer-tmp")
    temporary.write_text(json.dumps(new_config, indent=1))
    temporary.replace(config_path)


def prepare_exec(invocation: Invocation) -> None:
    """exec: the process file becomes the exec client, which runs the original in the VM."""
    from virtainer.runtime.processes import exec_process

    process_file = invocation.arg_value("--process", "-p")
    if not process_file:
        raise VirtainerError("exec without --process is not supported by virtainer (docker exec always passes one)")
    path = Path(process_file)
    try:
        process = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise VirtainerError(f"cannot read {path}: {error}") from None
    path.write_text(json.dumps(exec_process(process)))


def report(invocation: Invocation, message: str) -> None:
    """One line on stderr, and runc's JSON log record (what containerd's shim shows)."""
    sys.stderr.write(f"virtainer: {message}\n")
    log_path = invocation.global_value("--log")
    if log_path and invocation.global_value("--log-format") == "json":
        record = {
            "level": "error",
            "msg": f"virtainer: {message}",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            with Path(log_path).open("a") as log:
                log.write(json.dumps(record) + "\n")
        except OSError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] and args[0] in OWN_COMMANDS:
        from virtainer.runtime import install

        return install.main(args)
    invocation = parse(args)
    try:
        if invocation.verb in ("create", "run"):
            prepare_bundle(invocation)
        elif invocation.verb == "exec":
            prepare_exec(invocation)
        runc = runc_binary()
    except VirtainerError as error:
        report(invocation, str(error))
        return EXIT_FAILED
    os.execv(runc, [runc, *invocation.argv()])
    return EXIT_FAILED  # not reached


if __name__ == "__main__":
    sys.exit(main())
