"""Checks of rendered Kubernetes manifests against what the virtainer container needs.

The schema (is this a valid StatefulSet?) is Kubernetes' business and is checked by the tests
with the OpenAPI schemas; this module checks what no schema knows: the memory limit covers the
VM's RAM plus the overhead, the diff lives on a claim of its own, the probes ask the API, the
grace period covers the guest's shutdown, the capabilities are the ones the container needs.
Each problem is one line naming the resource, the field and what is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from virtainer.errors import ConfigError
from virtainer.orchestration import needs

VIRTAINER_LABEL = ("app.kubernetes.io/name", "virtainer")
VM_CONTAINER = "vm"

_QUANTITY_MIB = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}


class ManifestError(ConfigError):
    def __init__(self, where: str, field: str, value: object, accepted: str) -> None:
        super().__init__(f"{field} of {where}", value, accepted)


@dataclass(frozen=True)
class VmWorkload:
    """A virtainer StatefulSet as rendered: its pod template and the VM container in it."""

    where: str  # "StatefulSet/vm"
    spec: Mapping[str, Any]
    pod: Mapping[str, Any]
    container: Mapping[str, Any]

    @property
    def env(self) -> dict[str, Any]:
        return {item["name"]: item for item in self.container.get("env", [])}

    def env_value(self, name: str, default: str) -> str:
        item = self.env.get(name)
        return str(item.get("value", default)) if item else default


def vm_workloads(resources: list[dict[str, Any]]) -> Iterator[VmWorkload]:
    for resource in resources:
        labels = resource.get("metadata", {}).get("labels", {})
        if resource.get("kind") != "StatefulSet" or labels.get(VIRTAINER_LABEL[0]) != VIRTAINER_LABEL[1]:
            continue
        where = f"StatefulSet/{resource['metadata']['name']}"
        pod = resource["spec"]["template"]["spec"]
        container = next((c for c in pod.get("containers", []) if c.get("name") == VM_CONTAINER), None)
        if container is None:
            raise ManifestError(where, "spec.template.spec.containers", "-", f"a container named {VM_CONTAINER}")
        yield VmWorkload(where, resource["spec"], pod, container)


def check(resources: list[dict[str, Any]]) -> list[VmWorkload]:
    """Raise ManifestError for the first problem; return the VM workloads found."""
    workloads = list(vm_workloads(resources))
    if not workloads:
        raise ManifestError(
            "the manifests", "StatefulSet", "none", "a StatefulSet labelled app.kubernetes.io/name=virtainer"
        )
    for workload in workloads:
        _check_environment(workload)
        _check_memory(workload)
        _check_diff_claim(workload)
        _check_mounts(workload)
        _check_capabilities(workload)
        _check_probes(workload)
        _check_grace_period(workload)
    return workloads


def _check_environment(workload: VmWorkload) -> None:
    accepted = needs.accepted_env_names()
    for name in workload.env:
        if name not in accepted:
            raise ManifestError(
                workload.where, "env", name, "a variable the virtainer container reads (see container/README.md)"
            )
    token = workload.env.get(needs.API_TOKEN_ENV)
    if token is not None and "secretKeyRef" not in token.get("valueFrom", {}):
        raise ManifestError(workload.where, f"env {needs.API_TOKEN_ENV}", "a literal value", "valueFrom.secretKeyRef")


def quantity_mib(text: object) -> float:
    value = str(text)
    for suffix, factor in sorted(_QUANTITY_MIB.items(), key=lambda item: -len(item[0])):
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(value[: -len(suffix)]) * factor
    if value.isdigit():
        return int(value) / 2**20
    raise ValueError(value)


def _check_memory(workload: VmWorkload) -> None:
    ram, cpu = workload.env_value("RAM", ""), workload.env_value("CPU", "1")
    ram = ram or workload.env_value("VIRTAINER_MEMORY", "")
    if not ram:
        raise ManifestError(workload.where, "env RAM", "unset", "the VM's memory (the limit is derived from it)")
    try:
        size = needs.vm_size(ram, workload.env_value("VIRTAINER_CPUS", cpu))
    except ValueError:
        raise ManifestError(workload.where, "env RAM/CPU", f"{ram}/{cpu}", "MiB (or 2G) and a vCPU count") from None
    resources = workload.container.get("resources", {})
    for kind in ("limits", "requests"):
        text = resources.get(kind, {}).get("memory")
        if text is None:
            raise ManifestError(
                workload.where, f"resources.{kind}.memory", "unset", f"at least {size.container_memory_mib}Mi"
            )
        try:
            mib = quantity_mib(text)
        except ValueError:
            raise ManifestError(workload.where, f"resources.{kind}.memory", text, "a quantity such as 2432Mi") from None
        if mib < size.container_memory_mib:
            raise ManifestError(
                workload.where, f"resources.{kind}.memory", text,
                f"at least {size.container_memory_mib}Mi (RAM {size.memory_mib} MiB + {size.overhead_mib} MiB "
                "for QEMU, libvirtd and the controller)",
            )  # fmt: skip


def _claims(workload: VmWorkload) -> set[str]:
    return {claim["metadata"]["name"] for claim in workload.spec.get("volumeClaimTemplates", [])}


def _check_diff_claim(workload: VmWorkload) -> None:
    diff_mount = next(
        (m for m in workload.container.get("volumeMounts", []) if m["mountPath"] == str(needs.DIFF_MOUNT)), None
    )
    if diff_mount is None:
        raise ManifestError(
            workload.where,
            "volumeMounts",
            "no mount at /mounted",
            "the diff on a volumeClaimTemplate mounted at /mounted",
        )
    if diff_mount["name"] not in _claims(workload):
        raise ManifestError(
            workload.where, f"volumeMounts {needs.DIFF_MOUNT}", diff_mount["name"],
            "a volumeClaimTemplate of this StatefulSet (each VM its own persistent diff; "
            f"claims: {', '.join(sorted(_claims(workload))) or 'none'})",
        )  # fmt: skip


def _check_mounts(workload: VmWorkload) -> None:
    known = _claims(workload) | {volume["name"] for volume in workload.pod.get("volumes", [])}
    for mount in workload.container.get("volumeMounts", []):
        if mount["name"] not in known:
            raise ManifestError(
                workload.where, f"volumeMounts {mount['mountPath']}", mount["name"],
                f"a volume or volumeClaimTemplate of the pod ({', '.join(sorted(known)) or 'none'})",
            )  # fmt: skip
    for volume in workload.pod.get("volumes", []):
        host = volume.get("hostPath", {})
        if host.get("path") == str(needs.KVM_DEVICE) and host.get("type") != "CharDevice":
            raise ManifestError(workload.where, "volumes kvm hostPath.type", host.get("type"), "CharDevice")


def _check_capabilities(workload: VmWorkload) -> None:
    context = workload.container.get("securityContext", {})
    added = set(context.get("capabilities", {}).get("add", []))
    network = workload.env_value("VIRTAINER_NETWORK", "default")
    if network == "default" and not context.get("privileged") and not set(needs.NETWORK_CAPABILITIES) <= added:
        missing = sorted(set(needs.NETWORK_CAPABILITIES) - added)
        raise ManifestError(
            workload.where, "securityContext.capabilities.add", sorted(added),
            f"also {', '.join(missing)} for the VM's NIC (or env VIRTAINER_NETWORK=user)",
        )  # fmt: skip
    extra = added - set(needs.NETWORK_CAPABILITIES) - set(needs.RUNTIME_DEFAULT_CAPABILITIES)
    if extra:
        allowed = ", ".join(needs.NETWORK_CAPABILITIES + needs.RUNTIME_DEFAULT_CAPABILITIES)
        raise ManifestError(
            workload.where, "securityContext.capabilities.add", sorted(added),
            f"only {allowed} (the container needs no more)",
        )  # fmt: skip


def _probe_ok(probe: Mapping[str, Any] | None, path: str, ports: Mapping[str, int]) -> bool:
    get = (probe or {}).get("httpGet", {})
    port = get.get("port")
    return bool(get.get("path") == path and ports.get(str(port), port) == needs.API_PORT)


def _check_probes(workload: VmWorkload) -> None:
    ports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in workload.container.get("ports", [])}
    for field, path in (("readinessProbe", needs.READY_PATH), ("livenessProbe", needs.ALIVE_PATH)):
        if not _probe_ok(workload.container.get(field), path, ports):
            raise ManifestError(
                workload.where, field, workload.container.get(field), f"httpGet {path} on port {needs.API_PORT}"
            )


def _check_grace_period(workload: VmWorkload) -> None:
    try:
        stop_timeout = float(workload.env_value("VIRTAINER_STOP_TIMEOUT", str(needs.DEFAULT_STOP_TIMEOUT_S)))
    except ValueError:
        raise ManifestError(
            workload.where, "env VIRTAINER_STOP_TIMEOUT", workload.env_value("VIRTAINER_STOP_TIMEOUT", ""), "seconds"
        ) from None
    wanted = needs.grace_period_s(stop_timeout)
    grace = workload.pod.get("terminationGracePeriodSeconds", 30)
    if grace < wanted:
        raise ManifestError(
            workload.where, "terminationGracePeriodSeconds", grace,
            f"at least {wanted} (VIRTAINER_STOP_TIMEOUT {stop_timeout:g} s for the guest's shutdown"
            f" + {needs.STOP_MARGIN_S} s)",
        )  # fmt: skip
