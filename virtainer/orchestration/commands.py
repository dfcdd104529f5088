"""CLI: `virtainer kube render DIR`, `virtainer kube check FILE...`, and the fleet view of
`virtainer status` (`--api URL` repeated, `--fleet FILE`, `--docker [--label K=V]`).

virtainer kube render deploy/kubernetes/overlays/fleet | kubectl apply -f -
kubectl kustomize deploy/kubernetes/overlays/fleet > fleet.yaml && virtainer kube check fleet.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from virtainer.errors import ConfigError
from virtainer.exit_codes import EXIT_OK, EXIT_RUNTIME

if TYPE_CHECKING:  # the fleet view's pydantic models, HTTP client and table load only when it runs
    from rich.table import Table

    from virtainer.api.fleet import Member, Source

Command = Callable[[argparse.Namespace], int]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Command]:
    kube = commands.add_parser("kube", help="render and check the Kubernetes manifests (deploy/kubernetes)")
    actions = kube.add_subparsers(dest="kube_command", required=True, metavar="ACTION")
    render = actions.add_parser("render", help="render a kustomization (like kubectl kustomize), checked")
    render.add_argument("directory", type=Path, help="e.g. deploy/kubernetes/overlays/one-vm")
    check = actions.add_parser("check", help="check rendered manifests (files, or - for stdin)")
    check.add_argument("files", nargs="+", help="YAML files of rendered resources")
    image = commands.add_parser("image", help="ship a VM as a container image")
    image_actions = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    bake = image_actions.add_parser("build", help="an image whose guest base is a stopped VM's diff (bake)")
    bake.add_argument("diff", type=Path, help="the diff, or the directory (volume) holding local_image.qcow2")
    bake.add_argument("--from", dest="source", required=True, help="the image the VM ran on")
    bake.add_argument("-t", "--tag", required=True, help="the new image's name, e.g. team/vm:1")
    bake.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="a default setting (ENV)")
    return {"kube": cmd_kube, "image": cmd_image}


def cmd_image(args: argparse.Namespace) -> int:
    from virtainer.orchestration import images  # storage and Docker only when it runs

    built = images.build(args.diff, args.source, args.tag, images.parse_env(args.env))
    print(f"built {built.tag}: guest base {built.layer} ({built.layer_bytes / 2**20:.1f} MiB layer) on {args.source}")
    return EXIT_OK


def cmd_kube(args: argparse.Namespace) -> int:
    from virtainer.orchestration import kubernetes, kustomize  # their schemas: not loaded by `up`

    if args.kube_command == "render":
        resources = kustomize.render(args.directory)
        kubernetes.check(resources)
        sys.stdout.write(yaml.safe_dump_all(resources, sort_keys=True, default_flow_style=False))
        return EXIT_OK
    resources = [doc for name in args.files for doc in _documents(name)]
    for workload in kubernetes.check(resources):
        print(f"{workload.where}: ok")
    return EXIT_OK


def _documents(name: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError("manifest file", name, f"readable YAML ({str(error).splitlines()[0]})") from None
    if not all(isinstance(doc, dict) for doc in documents):
        raise ConfigError("manifest file", name, "Kubernetes resources (mappings)")
    return documents


# ---- virtainer status over a fleet --------------------------------------------------------------


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("a fleet: the VMs of many containers or hosts in one table")
    group.add_argument("--api", action="append", default=[], metavar="URL", help="a virtainer API (repeatable)")
    group.add_argument("--fleet", type=Path, metavar="FILE", help="one API per line: URL [TOKEN]")
    group.add_argument("--docker", action="store_true", help="every virtainer container of the Docker engine")
    group.add_argument("--label", action="append", default=[], metavar="K=V", help="with --docker: only these")
    group.add_argument("--token", help="bearer token for --api URLs (env VIRTAINER_API_TOKEN)")
    # a container API loads FastAPI on its first connection: seconds, on a busy host
    group.add_argument("--timeout", type=float, default=30.0, help="seconds per API (default 30)")


def wants_fleet(args: argparse.Namespace) -> bool:
    return bool(args.api or args.fleet or args.docker)


def fleet_sources(args: argparse.Namespace) -> list[Source]:
    from virtainer.api.fleet import Source
    from virtainer.orchestration import fleet

    if args.label and not args.docker:
        raise ConfigError("--label", args.label[0], "a filter of --docker (add --docker)")
    token = args.token or fleet.env_token()
    sources = [Source(url, url, token) for url in args.api]
    if args.fleet:
        sources += fleet.sources_from_file(args.fleet)
    if args.docker:
        sources += fleet.docker_sources(args.label)
    return sources


def cmd_fleet_status(args: argparse.Namespace) -> int:
    from virtainer.api.fleet import gather, member_public

    members = gather(fleet_sources(args), timeout_s=args.timeout)
    if args.name:
        members = [replace(member, vms=[vm for vm in member.vms if vm.name == args.name]) for member in members]
    from rich.console import Console  # ~40 ms: loaded by the fleet view only, not by `up`

    errors = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # text as it is (cli.py)
    for member in members:
        if member.error:
            errors.print(f"virtainer: {member.source}: {member.error}", markup=False)
    if args.json:
        shapes = [member_public(member).model_dump(mode="json") for member in members]
        sys.stdout.write(json.dumps(shapes, indent=2) + "\n")
    else:
        out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
        out.print(fleet_table(members, out.width))
    return EXIT_RUNTIME if any(member.error for member in members) else EXIT_OK


def fleet_table(members: list[Member], width: int) -> Table:
    """The status table with a source column: each member's VMs, or that it is unreachable."""
    from virtainer.cli_layout import status_table

    vms = [(member.source, vm) for member in members for vm in member.vms]
    unreachable = [member.source for member in members if member.error]
    return status_table([vm for _, vm in vms], width, sources=[source for source, _ in vms], unreachable=unreachable)
