"""CLI commands of the API issue: `serve`, `start|stop|reboot`, `snapshot create|list|revert|delete`.
`down` is another name of `stop`: the same operation, rule and words.

The power and snapshot commands work on local libvirt, or on a running API when `--api URL` (or
VIRTAINER_API_URL) is given, with `--token` (or VIRTAINER_API_TOKEN).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from virtainer.errors import ConfigError
from virtainer.exit_codes import EXIT_OK, EXIT_TIMEOUT
from virtainer.spec import timeout_argument
from virtainer.validators import NAME_RULE, is_name

if TYPE_CHECKING:  # the clients load only when one of these commands runs, pydantic only for --json
    from virtainer import operations, snapshots
    from virtainer.api import models
    from virtainer.api.client import VmClient

Command = Callable[[argparse.Namespace], int]
SERVE_FLAGS = {"listen": "--listen", "port": "--port", "token_file": "--token-file"}


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Command]:
    """Add the subcommands to the `virtainer` parser; returns their handlers by name."""
    serve = commands.add_parser("serve", help="serve the REST API (uvicorn)")
    serve.add_argument("--listen", help="address to listen on (default 127.0.0.1; env VIRTAINER_API_LISTEN)")
    serve.add_argument("--port", type=int, help="TCP port (default 8470; env VIRTAINER_API_PORT)")
    serve.add_argument("--token-file", type=Path, help="where a generated token is kept (0600)")
    serve.add_argument("--vm", action="append", dest="vms", help="serve only this VM (repeatable)")
    serve.add_argument(
        "--docker", action="store_true", default=None,
        help="manager mode: list, create, start, stop and remove the Docker engine's VM containers "
        "(DOCKER_HOST applies; env VIRTAINER_API_DOCKER)",
    )  # fmt: skip

    for name, text in (("start", "start a stopped VM"), ("reboot", "reboot a running VM")):
        _vm_command(commands.add_parser(name, help=text)).set_defaults(operation=name)
    stop = commands.add_parser(
        "stop", aliases=["down"], help="graceful shutdown: guest agent, then ACPI; destroyed after --timeout"
    )
    _vm_command(stop).set_defaults(operation="stop")
    stop.add_argument("--timeout", type=timeout_argument, default=60.0, help="seconds before destroy (default 60)")

    snapshot = commands.add_parser("snapshot", help="create, list, revert or delete snapshots")
    actions = snapshot.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    create = _vm_command(actions.add_parser("create", help="take a snapshot"))
    create.add_argument("--name", dest="snapshot", help="snapshot name (default snap-<UTC time>)")
    create.add_argument("--memory", action="store_true", help="include memory (running VM)")
    create.add_argument("--description", default="", help="free text kept with the snapshot")
    _vm_command(actions.add_parser("list", help="list snapshots"))
    for name in ("revert", "delete"):
        _vm_command(actions.add_parser(name, help=f"{name} a snapshot")).add_argument("snapshot")
    power = dict.fromkeys(("start", "stop", "down", "reboot"), cmd_power)
    return {"serve": cmd_serve, **power, "snapshot": cmd_snapshot}


def _vm_command(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("name", nargs="?", default="vm", help="VM name (default vm)")
    parser.add_argument("--api", default=os.environ.get("VIRTAINER_API_URL"), help="API URL (env VIRTAINER_API_URL)")
    parser.add_argument("--token", default=os.environ.get("VIRTAINER_API_TOKEN"), help="env VIRTAINER_API_TOKEN")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from virtainer.api.server import main  # FastAPI and uvicorn only when serving
    from virtainer.api.settings import ENV_NAMES, ApiSettings

    overrides = {"listen": args.listen, "port": args.port, "token_file": args.token_file, "libvirt_uri": args.connect}
    vms = tuple(args.vms) if args.vms else None
    settings = ApiSettings.from_env(flags=SERVE_FLAGS, **overrides, vms=vms, docker=args.docker)
    settings.check_listen({**ENV_NAMES, **{key: flag for key, flag in SERVE_FLAGS.items() if overrides.get(key)}})
    sys.stderr.write(f"virtainer api: serving on http://{settings.listen}:{settings.port} (docs at /docs)\n")
    return main(settings)


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[VmClient]:
    from virtainer.api.client import LocalClient, RemoteClient
    from virtainer.hypervisor import DEFAULT_URI, Hypervisor

    if args.api:
        remote = RemoteClient(args.api, args.token)
        try:
            yield remote
        finally:
            remote.close()
        return
    with Hypervisor(args.connect or DEFAULT_URI) as hv:
        yield LocalClient(hv)


def _check_names(args: argparse.Namespace) -> None:
    """VM and snapshot names are checked here, before any call: a name is part of a URL path on
    the remote path (`../x` would name another route), and invalid input is one line, exit 2."""
    for setting, value in (("VM name", args.name), ("snapshot name", getattr(args, "snapshot", None))):
        if value is not None and not is_name(value):
            raise ConfigError(setting, value, NAME_RULE)


def cmd_power(args: argparse.Namespace) -> int:
    _check_names(args)
    with _client(args) as client:
        if args.operation == "start":
            result = client.start(args.name)
        elif args.operation == "stop":
            result = client.stop(args.name, args.timeout)
        else:
            result = client.reboot(args.name)
    text = _describe_stop(result, args.timeout) if args.operation == "stop" else _describe_operation(result)
    _print(args, text, result)
    return EXIT_OK if result.graceful is not False else EXIT_TIMEOUT  # a stop that had to destroy


def _describe_operation(result: operations.OperationResult) -> str:
    how = f" ({result.method})" if result.method else ""
    return f"VM '{result.vm}': {result.operation} done{how} in {result.elapsed_s:.1f} s; now {result.state}"


STOPPED_BY = {"agent": "guest agent", "acpi": "ACPI power button"}


def _describe_stop(result: operations.OperationResult, timeout_s: float) -> str:
    if result.graceful is False:
        return f"VM '{result.vm}' did not power off within {timeout_s:.0f} s and was destroyed"
    return f"VM '{result.vm}' is off ({STOPPED_BY.get(result.method or '', result.method)}, {result.elapsed_s:.1f} s)"


def cmd_snapshot(args: argparse.Namespace) -> int:
    _check_names(args)
    with _client(args) as client:
        action = args.snapshot_command
        if action == "create":
            from pydantic import ValidationError

            from virtainer.api import models

            kind: snapshots.SnapshotKind = "memory" if args.memory else "disk"
            try:
                request = models.SnapshotCreate(name=args.snapshot, kind=kind, description=args.description)
            except ValidationError as error:  # the name is checked already: the description
                raise ConfigError("--description", args.description, error.errors()[0]["msg"]) from None
            created = client.create_snapshot(args.name, request.name, request.kind, request.description)
            text = f"snapshot '{created.name}' ({created.kind}) of VM '{args.name}' created"
            _print(args, text, created)
        elif action == "list":
            found = client.list_snapshots(args.name)
            _print_list(args, found)
        elif action == "revert":
            reverted = client.revert_snapshot(args.name, args.snapshot)
            done = f"reverted to '{args.snapshot}' in {reverted.elapsed_s:.1f} s; now {reverted.state.value}"
            _print(args, f"VM '{args.name}' {done}", reverted)
        else:
            client.delete_snapshot(args.name, args.snapshot)
            sys.stdout.write(f"snapshot '{args.snapshot}' of VM '{args.name}' deleted\n")
    return EXIT_OK


def _print(args: argparse.Namespace, text: str, result: models.CoreResult) -> None:
    """The text, or with --json the result in the API's shape (the same JSON as the API's answer)."""
    if args.json:
        from virtainer.api.models import public  # pydantic: only for --json

        text = public(result).model_dump_json(indent=2)
    sys.stdout.write(text + "\n")


def _print_list(args: argparse.Namespace, found: list[snapshots.Snapshot]) -> None:
    if args.json:
        from virtainer.api import models

        shapes = [models.snapshot_public(item).model_dump() for item in found]
        sys.stdout.write(json.dumps(shapes, indent=2) + "\n")
        return
    from datetime import UTC, datetime

    for item in found:
        when = datetime.fromtimestamp(item.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        mark = "*" if item.current else " "
        sys.stdout.write(f"{mark} {item.name:24} {item.kind:6} {when}  {item.description}\n")
