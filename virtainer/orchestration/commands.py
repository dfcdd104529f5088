"""CLI: `virtainer kube render DIR` and `virtainer kube check FILE...`.

virtainer kube render deploy/kubernetes/overlays/fleet | kubectl apply -f -
kubectl kustomize deploy/kubernetes/overlays/fleet > fleet.yaml && virtainer kube check fleet.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from virtainer.errors import EXIT_OK, ConfigError
from virtainer.orchestration import kubernetes, kustomize

Command = Callable[[argparse.Namespace], int]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Command]:
    kube = commands.add_parser("kube", help="render and check the Kubernetes manifests (deploy/kubernetes)")
    actions = kube.add_subparsers(dest="kube_command", required=True, metavar="ACTION")
    render = actions.add_parser("render", help="render a kustomization (like kubectl kustomize), checked")
    render.add_argument("directory", type=Path, help="e.g. deploy/kubernetes/overlays/one-vm")
    check = actions.add_parser("check", help="check rendered manifests (files, or - for stdin)")
    check.add_argument("files", nargs="+", help="YAML files of rendered resources")
    return {"kube": cmd_kube}


def cmd_kube(args: argparse.Namespace) -> int:
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
