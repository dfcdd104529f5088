"""The `virtainer` command: a thin layer over the lifecycle in virtainer.machine.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration (nothing was changed),
3 timeout (readiness or graceful stop), 4 conflict (wrong state, diff in use), 5 not found.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import termios
import time
import traceback
import tty
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from virtainer import machine
from virtainer.api.commands import add_commands as add_api_commands
from virtainer.cli_layout import metavar
from virtainer.cli_output import CHECK_MARK, Output
from virtainer.errors import VirtainerError, debug_enabled, describe_unexpected, one_line
from virtainer.exit_codes import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, exit_status
from virtainer.guest_cli import add_commands as add_guest_commands
from virtainer.hypervisor import DEFAULT_URI, Hypervisor
from virtainer.orchestration.commands import add_commands as add_orchestration_commands
from virtainer.orchestration.commands import add_fleet_arguments, cmd_fleet_status, wants_fleet
from virtainer.readiness import StageRecord
from virtainer.spec import (
    SETTINGS,
    RawSettings,
    RawValue,
    VmSpec,
    merge_settings,
    resolve_spec,
    settings_from_env,
    settings_from_file,
)
from virtainer.storage import DiffLock, require_system_disk

if TYPE_CHECKING:  # rich's progress and table modules load only when a command draws them
    from rich.progress import Progress, TaskID

CONSOLE_ESCAPE = b"\x1d"  # Ctrl+], as in virsh console

err = Output(stderr=True, markup=True)
out = Output(stderr=False, markup=False)  # names and paths are printed as they are


class CliReporter:
    """Steps and readiness stages on stderr, with a progress bar for long transfers."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def step(self, message: str) -> None:
        elapsed = f"{time.monotonic() - self.started:6.1f}s"
        # escaped: a path like /vms/[x]/d.qcow2 is text, not rich markup (a stray [/x] would raise)
        err.line(f"{elapsed} {message}", lambda escape: f"[dim]{elapsed}[/dim] {escape(message)}")

    def stage(self, record: StageRecord) -> None:
        elapsed = f"{time.monotonic() - self.started:6.1f}s"
        plain_detail = f" {record.detail}" if record.detail else ""

        def styled(escape: Callable[[str], str]) -> str:
            detail = f" [dim]{escape(record.detail)}[/dim]" if record.detail else ""
            return f"[dim]{elapsed}[/dim] [green]{CHECK_MARK}[/green] {record.stage}{detail}"

        err.line(f"{elapsed} {CHECK_MARK} {record.stage}{plain_detail}", styled)

    def progress(self, label: str, done: int, total: int | None) -> None:
        if self._progress is None and err.is_plain:
            return  # rich's bar is disabled off a terminal: it would draw nothing
        if self._progress is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
            console = err.console
            self._progress = Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
            self._progress.start()
        if label not in self._tasks:
            self._tasks[label] = self._progress.add_task(label, total=total)
        self._progress.update(self._tasks[label], completed=done, total=total)
        if total is not None and done >= total:
            self._progress.remove_task(self._tasks.pop(label))
            if not self._tasks:
                self._progress.stop()
                self._progress = None


# ---------------------------------------------------------------------------------------------
# argument parsing


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block) and exit status 2, like every other
    invalid input."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="virtainer", description="Cloud-image VMs through libvirt.")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error (env VIRTAINER_DEBUG=1)"
    )
    parser.add_argument(
        "-c", "--connect", default=os.environ.get("VIRTAINER_LIBVIRT_URI") or os.environ.get("LIBVIRT_DEFAULT_URI"),
        help=f"libvirt URI (default {DEFAULT_URI}; env VIRTAINER_LIBVIRT_URI)",
    )  # fmt: skip
    # typed as plain ArgumentParsers for the other modules' add_commands; they are OneLineParsers
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = typing.cast("argparse._SubParsersAction[argparse.ArgumentParser]", subparsers)

    up = commands.add_parser("up", help="create and start a VM, wait until it is ready")
    _add_spec_arguments(up)
    up.add_argument("--no-wait", action="store_true", help="return once the domain runs")

    render = commands.add_parser("render", help="print the domain XML without touching libvirt")
    _add_spec_arguments(render)

    status = commands.add_parser("status", help="state, accelerator, addresses and readiness")
    status.add_argument("name", nargs="?", help="a VM name (default: all VMs)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add_fleet_arguments(status)  # --api URL ..., --fleet FILE, --docker: many containers or hosts

    console = commands.add_parser("console", help="attach to the serial console (Ctrl+] leaves)")
    console.add_argument("name", nargs="?", default="vm")

    destroy = commands.add_parser("destroy", help="power off at once (the diff is kept)")
    destroy.add_argument("name", nargs="?", default="vm")

    undefine = commands.add_parser("undefine", help="forget a stopped VM (its disks are kept)")
    undefine.add_argument("name", nargs="?", default="vm")

    screenshot = commands.add_parser("screenshot", help="save the guest's screen as an image")
    screenshot.add_argument("name", nargs="?", default="vm")
    screenshot.add_argument("-o", "--output", type=Path, help="file to write (default NAME-screen.png)")
    COMMANDS.update(add_api_commands(commands))  # serve, start|stop (down)|reboot, snapshot
    COMMANDS.update(add_orchestration_commands(commands))  # kube render|check
    COMMANDS.update(add_guest_commands(commands, _progress))  # exec, cp, keys, password, ssh
    runtime = commands.add_parser("runtime", help="register the OCI runtime with dockerd: install | uninstall")
    runtime.add_argument("runtime_args", nargs=argparse.REMAINDER, metavar="install|uninstall [...]")
    COMMANDS["runtime"] = _runtime
    return parser


def _runtime(args: argparse.Namespace) -> int:
    from virtainer.runtime import install  # an outer layer: loaded only for this command

    return install.main(args.runtime_args)


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name_arg", nargs="?", metavar="NAME", help="VM name (same as --name)")
    parser.add_argument("-f", "--config", type=Path, metavar="FILE", help="JSON or YAML file of settings")
    group = parser.add_argument_group("VM settings (also VIRTAINER_* environment variables)")
    for setting in SETTINGS:
        action = "append" if setting.multi else "store"
        group.add_argument(
            setting.flag, dest=f"spec_{setting.key}", action=action, metavar=metavar(setting.key), help=setting.help
        )


def settings_from_args(args: argparse.Namespace) -> RawSettings:
    raw: RawSettings = {}
    for setting in SETTINGS:
        value = getattr(args, f"spec_{setting.key}", None)
        if value is not None:
            raw[setting.key] = RawValue(value, setting.flag)
    if args.name_arg is not None:
        positional = RawValue(args.name_arg, "NAME")
        raw["name"] = positional.with_other(raw["name"]) if "name" in raw else positional  # NAME and --name
    return raw


def spec_from_args(args: argparse.Namespace) -> VmSpec:
    """Defaults < config file < environment < flags."""
    file_settings = settings_from_file(args.config) if args.config else {}
    merged = merge_settings(file_settings, settings_from_env(os.environ), settings_from_args(args))
    return resolve_spec(merged)


# ---------------------------------------------------------------------------------------------
# commands


def cmd_render(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    require_system_disk(spec)
    out.console.print(machine.render(spec), end="", markup=False)  # what `up` would define, byte for byte
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    require_system_disk(spec)
    reporter = CliReporter()
    # the container's diff lock: two starts on one diff never write it at once
    with _hypervisor(args) as hv, DiffLock(spec.diff_path).held():
        result = machine.up(spec, hv, reporter, wait=not args.no_wait)
    total = time.monotonic() - reporter.started
    out.line(f"VM '{result.name}' is {'running' if args.no_wait else 'ready'} after {total:.1f} s")
    out.line(f"accelerator: {result.accelerator.kind} ({result.accelerator.reason})")
    if result.address:
        out.line(f"address: {result.address}")
    if command := result.ssh_command():
        out.line(f"ssh: {command}")
    if result.generated_password:
        out.line(f"password for {result.user or 'the default user'} (shown once): {result.generated_password}")
        out.line(f"it is kept, readable by root only, in {result.password_path}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    if wants_fleet(args):
        return cmd_fleet_status(args)
    from virtainer import operations  # with the guest's facts: not loaded by `up`, ~18 ms here

    with _hypervisor(args) as hv:
        names = [args.name] if args.name else hv.list_names()
        statuses = [operations.status(hv, name) for name in names]
    if args.json:  # the API's shape (GET /v1/vms/NAME)
        payload = [operations.as_dict(item) for item in statuses]
        out.console.print_json(json.dumps(payload[0] if args.name else payload))
        return EXIT_OK
    from virtainer.cli_layout import status_table

    out.console.print(status_table(statuses, out.console.width))
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    from virtainer import operations

    with _hypervisor(args) as hv:
        operations.destroy(hv, args.name)
    out.line(f"VM '{args.name}' destroyed")
    return EXIT_OK


def cmd_undefine(args: argparse.Namespace) -> int:
    with _hypervisor(args) as hv:
        machine.undefine(hv, args.name)
    out.line(f"VM '{args.name}' undefined; its disks are kept")
    return EXIT_OK


def cmd_screenshot(args: argparse.Namespace) -> int:
    path = args.output or Path(f"{args.name}-screen.png")
    with _hypervisor(args) as hv:
        mime = hv.screenshot(args.name, path)
    out.line(f"screen of '{args.name}' saved to {path} ({mime})")
    return EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    with _hypervisor(args) as hv, hv.console(args.name) as stream:
        interactive = sys.stdin.isatty()
        if interactive:
            err.console.print(f"Connected to '{args.name}'. Escape character is ^]")
        with _raw_terminal(interactive):
            _pump_console(stream, interactive)
    return EXIT_OK


def _pump_console(stream: object, interactive: bool) -> None:
    """Copy stdin to the guest and the guest to stdout until ^] or end of input."""
    from virtainer.hypervisor import ConsoleStream

    assert isinstance(stream, ConsoleStream)
    stdin = sys.stdin.buffer.fileno()
    stdout = sys.stdout.buffer
    stdin_open = True
    while not stream.closed:
        readable, _, _ = select.select([stdin] if stdin_open else [], [], [], 0.05)
        if readable:
            data = os.read(stdin, 4096)
            if CONSOLE_ESCAPE in data or (not data and interactive):
                return
            if not data:
                stdin_open = False  # piped input ended: keep showing output until the stream closes
            stream.write(data)
        output = stream.read(timeout_s=0.05)
        if output:
            stdout.write(output)
            stdout.flush()


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _hypervisor(args: argparse.Namespace) -> Iterator[Hypervisor]:
    hv = Hypervisor(args.connect or DEFAULT_URI)
    try:
        yield hv
    finally:
        hv.close()


COMMANDS = {
    "up": cmd_up,
    "render": cmd_render,
    "status": cmd_status,
    "console": cmd_console,
    "destroy": cmd_destroy,
    "undefine": cmd_undefine,
    "screenshot": cmd_screenshot,
}


def _progress(label: str, done: int, total: int | None) -> None:
    _transfers.progress(label, done, total)


_transfers = CliReporter()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `exec NAME -- CMD ARGS` and `ssh NAME -- CMD`: what follows the first -- is the guest's
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = build_parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.argv = command
    try:
        return COMMANDS[args.command](args)
    except VirtainerError as error:
        sys.stderr.write(f"virtainer: error: {one_line(str(error))}\n")  # exactly one line, never wrapped
        return exit_status(error)
    except KeyboardInterrupt:
        sys.stderr.write("virtainer: interrupted\n")
        return EXIT_RUNTIME
    except Exception as error:  # noqa: BLE001 - whatever it is, the user gets one line and exit 1
        debug = args.debug or debug_enabled(os.environ)
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (--debug or VIRTAINER_DEBUG=1 shows the traceback)"
        sys.stderr.write(f"virtainer: error: {describe_unexpected(error)}{hint}\n")
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
