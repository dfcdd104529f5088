"""A small kustomize: renders the kustomizations under deploy/kubernetes without kubectl.

`kubectl kustomize` (or `kubectl apply -k`) is the real thing and renders the same output; this
exists because neither kubectl nor kustomize is packaged by Debian 12 with a current kustomize
(kubernetes-client 1.20 embeds kustomize 2.0, which predates components), nor by PyPI or npm.

Supported, exactly as kustomize does it: `resources` (files and directories), `components`,
`patches` (strategic merge, from `path` or inline `patch`, with an optional `target` of kind
and name) and `replicas`. Anything else is refused with one line, never silently ignored.
Strategic merge here: mappings merge key by key, `null` deletes a key, the lists Kubernetes
merges by a key (containers and volumes by name, volume mounts by mount path, ...) merge item by
item, every other list is replaced.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from virtainer.errors import ConfigError

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "resources", "components", "patches", "replicas"})

# list field -> the key Kubernetes merges its items by (patchMergeKey in the OpenAPI schema)
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),  # a container's ports / a Service's ports
}

Resource = dict[str, Any]


class KustomizeError(ConfigError):
    """A kustomization this renderer cannot or will not render."""

    def __init__(self, where: Path | str, problem: str) -> None:
        super().__init__("kustomization", str(where), problem)


def render(directory: Path) -> list[Resource]:
    """The resources of the kustomization in `directory`, patched, in kustomize's order."""
    return sorted(_build(Path(directory), component=False), key=_order)


def render_yaml(directory: Path) -> str:
    return yaml.safe_dump_all(render(directory), sort_keys=True, default_flow_style=False)


def _kustomization(directory: Path) -> tuple[Path, dict[str, Any]]:
    for name in KUSTOMIZATION_NAMES:
        path = directory / name
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, dict):
                raise KustomizeError(path, "a mapping of kustomization fields")
            unknown = sorted(set(data) - SUPPORTED_FIELDS)
            if unknown:
                raise KustomizeError(
                    path, f"field {unknown[0]} is not supported here (only {', '.join(sorted(SUPPORTED_FIELDS))})"
                )
            return path, data
    raise KustomizeError(directory, "a directory with a kustomization.yaml")


def _build(directory: Path, *, component: bool, accumulated: list[Resource] | None = None) -> list[Resource]:
    path, data = _kustomization(directory)
    kind = data.get("kind", "Kustomization")
    if kind != ("Component" if component else "Kustomization"):
        raise KustomizeError(path, f"kind {kind} here (a {'Component' if component else 'Kustomization'} is needed)")
    resources = list(accumulated or [])
    for entry in _strings(data.get("resources", []), path, "resources"):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources += _build(target, component=False)
        elif target.is_file():
            resources += _load_documents(target)
        else:
            raise KustomizeError(path, f"resource {entry} does not exist")
    for entry in _strings(data.get("components", []), path, "components"):
        resources = _build((directory / entry).resolve(), component=True, accumulated=resources)
    for patch in data.get("patches", []) or []:
        _apply_patch(resources, patch, directory, path)
    for replica in data.get("replicas", []) or []:
        _apply_replicas(resources, replica, path)
    return resources


def _strings(value: object, path: Path, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise KustomizeError(path, f"{field} as a list of paths")
    return value


def _load_documents(path: Path) -> list[Resource]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for document in documents:
        if not isinstance(document, dict) or "kind" not in document or "metadata" not in document:
            raise KustomizeError(path, "Kubernetes resources (each with kind and metadata)")
    return documents


def _apply_patch(resources: list[Resource], entry: object, directory: Path, path: Path) -> None:
    if not isinstance(entry, dict) or ("path" in entry) == ("patch" in entry):
        raise KustomizeError(path, "each patch with either path or patch")
    text = (directory / entry["path"]).read_text() if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    if not isinstance(patch, dict) or "kind" not in patch:
        raise KustomizeError(
            path, "strategic merge patches (a resource with kind); JSON 6902 patches are not supported"
        )
    target = entry.get("target")
    if target is None:  # the patch names its target itself
        target = {"kind": patch["kind"], "name": patch.get("metadata", {}).get("name")}
    unknown = sorted(set(target) - {"kind", "name"})
    if unknown:
        raise KustomizeError(path, f"patch target field {unknown[0]} is not supported (only kind and name)")
    matched = [r for r in resources if _matches(r, target)]
    if not matched:
        raise KustomizeError(path, f"patch target {target} matches no resource")
    for resource in matched:
        name = resource["metadata"]["name"]
        merged = merge(resource, patch)
        merged["metadata"]["name"] = name  # a targeted patch's own name does not rename
        resource.clear()
        resource.update(merged)


def _matches(resource: Resource, target: dict[str, Any]) -> bool:
    return all(
        value is None or value == (resource["kind"] if key == "kind" else resource["metadata"].get("name"))
        for key, value in target.items()
    )


def _apply_replicas(resources: list[Resource], entry: object, path: Path) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("count"), int) or "name" not in entry:
        raise KustomizeError(path, "replicas as a list of name and count")
    matched = [r for r in resources if r["metadata"].get("name") == entry["name"] and "replicas" in r.get("spec", {})]
    if not matched:
        raise KustomizeError(path, f"replicas for {entry['name']} match no workload")
    for resource in matched:
        resource["spec"]["replicas"] = entry["count"]


def merge(original: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge of `patch` into `original` (neither is changed)."""
    if isinstance(original, dict) and isinstance(patch, dict):
        result = copy.deepcopy(original)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            elif key in result:
                result[key] = merge(result[key], value, key)
            else:
                result[key] = copy.deepcopy(value)
        return result
    if isinstance(original, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = _merge_key(field, original + patch)
        if key is not None:
            return _merge_list(original, patch, key)
    return copy.deepcopy(patch)


def _merge_key(field: str, items: Iterable[Any]) -> str | None:
    items = list(items)
    for key in MERGE_KEYS[field]:
        if items and all(isinstance(item, dict) and key in item for item in items):
            return key
    return None


def _merge_list(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    result = [copy.deepcopy(item) for item in original]
    index = {item[key]: position for position, item in enumerate(result)}
    added = []
    for item in patch:
        if item[key] in index:
            result[index[item[key]]] = merge(result[index[item[key]]], item)
        else:
            added.append(copy.deepcopy(item))
    return added + result  # kustomize puts the patch's new items first


# kustomize's default ("legacy") output order: these kinds first, in this order, then the rest
_KIND_ORDER = (
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
    "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
    "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
)  # fmt: skip


def _order(resource: Resource) -> tuple[int, str, str]:
    kind = resource["kind"]
    rank = _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
    return rank, kind, resource["metadata"].get("name", "")
