"""The Kubernetes manifests (deploy/kubernetes): rendered like kubectl kustomize, valid for three
Kubernetes versions, and asking for exactly what the container needs (virtainer.orchestration.needs,
the module the Docker tests take their flags from). No cluster runs here: see the README."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.container import docker as docker_tests
from tests.container.conftest import tiny_options
from tests.guests import TinyGuest
from virtainer.orchestration import kubernetes, kustomize, needs

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (DEPLOY / "overlays").iterdir())
# three minor versions a year apart: an old supported one, a middle one, the newest bundled
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")


def rendered(overlay: str) -> list[dict[str, Any]]:
    return kustomize.render(DEPLOY / "overlays" / overlay)


def vm(overlay: str) -> kubernetes.VmWorkload:
    (workload,) = kubernetes.check(rendered(overlay))
    return workload


def test_the_overlays_are_one_vm_and_a_fleet() -> None:
    assert OVERLAYS == ["fleet", "one-vm"]
    assert vm("one-vm").spec["replicas"] == 1
    assert vm("fleet").spec["replicas"] == 3


def _kubectl_kustomize() -> str | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run([kubectl, "kustomize", "--help"], capture_output=True, text=True, check=False)
    return kubectl if done.returncode == 0 else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_our_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    kubectl = _kubectl_kustomize()
    if kubectl is None:
        pytest.skip("no kubectl with kustomize on this machine (not packaged for Debian 12, PyPI or npm)")
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True, text=True, check=True
    )
    assert list(yaml.safe_load_all(done.stdout)) == rendered(overlay)


def _manifest_files() -> list[Path]:
    """The complete resources of the base (patches and components are partial by design)."""
    return sorted(path for path in (DEPLOY / "base").glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("source", [*OVERLAYS, "base-files"])
def test_every_manifest_validates_strictly(source: str, version: str) -> None:
    if source == "base-files":
        resources = [doc for path in _manifest_files() for doc in yaml.safe_load_all(path.read_text())]
    else:
        resources = rendered(source)
    assert resources
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']} invalid for {version}: {error.message}")


def test_the_validator_really_refuses_an_unknown_field() -> None:
    resource = rendered("one-vm")[-1]
    resource["spec"]["template"]["spec"]["containers"][0]["capabilitiez"] = ["NET_ADMIN"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(resource, KUBERNETES_VERSIONS[0], strict=True)


# ---- the pod spec against what the container needs ----------------------------------------------


def test_the_docker_tests_take_their_flags_from_the_same_source(tiny: TinyGuest, tmp_path: Path) -> None:
    assert docker_tests.NETWORK_CAPS is needs.NETWORK_CAPABILITIES
    options = tiny_options(tiny, tmp_path)
    assert f"{tmp_path}:{needs.DIFF_MOUNT}" in options["volumes"]  # type: ignore[operator]
    unknown = set(options["env"]) - needs.accepted_env_names()  # type: ignore[arg-type]
    assert not unknown, f"the Docker tests pass variables the container does not read: {unknown}"


@pytest.fixture(scope="module")
def tiny() -> TinyGuest:
    """Paths only (tiny_options reads their names): nothing is built."""
    guest = Path("/nonexistent/tiny")
    return TinyGuest(kernel=guest / "vmlinuz", initrd=guest / "initrd.gz", base_image=guest / "disk.qcow2")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_spec_gives_the_container_what_it_needs(overlay: str) -> None:
    workload = vm(overlay)
    container = workload.container
    context = container["securityContext"]
    assert tuple(context["capabilities"]["add"]) == needs.NETWORK_CAPABILITIES
    assert "drop" not in context["capabilities"]  # the runtime's NET_RAW and MKNOD are needed
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["api"] == needs.API_PORT and ports["ssh"] == needs.GUEST_SSH_PORT
    assert container["readinessProbe"]["httpGet"] == {"path": needs.READY_PATH, "port": "api"}
    assert container["livenessProbe"]["httpGet"] == {"path": needs.ALIVE_PATH, "port": "api"}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    claims = [claim["metadata"]["name"] for claim in workload.spec["volumeClaimTemplates"]]
    assert mounts[str(needs.DIFF_MOUNT)] in claims
    assert set(workload.env) <= needs.accepted_env_names()
    assert workload.env[needs.API_TOKEN_ENV]["valueFrom"]["secretKeyRef"]["name"] == "virtainer-api-token"
    size = needs.vm_size(workload.env_value("RAM", ""), workload.env_value("CPU", "1"))
    for kind in ("requests", "limits"):
        assert kubernetes.quantity_mib(container["resources"][kind]["memory"]) == size.container_memory_mib
    stop_timeout = float(workload.env_value("VIRTAINER_STOP_TIMEOUT", str(needs.DEFAULT_STOP_TIMEOUT_S)))
    assert workload.pod["terminationGracePeriodSeconds"] >= needs.grace_period_s(stop_timeout)


def test_kvm_through_the_device_plugin_stays_unprivileged() -> None:
    container = vm("one-vm").container
    assert container["resources"]["limits"][needs.KVM_DEVICE_PLUGIN_RESOURCE] == "1"
    assert container["securityContext"]["privileged"] is False


def test_kvm_through_a_host_path_is_a_char_device_mounted_where_qemu_looks() -> None:
    workload = vm("fleet")
    (volume,) = [v for v in workload.pod["volumes"] if "hostPath" in v]
    assert volume["hostPath"] == {"path": str(needs.KVM_DEVICE), "type": "CharDevice"}
    mounts = {mount["name"]: mount["mountPath"] for mount in workload.container["volumeMounts"]}
    assert mounts[volume["name"]] == str(needs.KVM_DEVICE)
    # a bind-mounted device node is outside the device cgroup: only privileged can open it
    assert workload.container["securityContext"]["privileged"] is True


def test_services_select_the_vm_pods_and_carry_the_standard_labels() -> None:
    resources = rendered("one-vm")
    workload = vm("one-vm")
    pod_labels = workload.spec["template"]["metadata"]["labels"]
    services = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Service"}
    assert set(services) == {"vm", "vm-api"}
    assert workload.spec["serviceName"] == "vm" and services["vm"]["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in services["vm-api"]["spec"]["ports"]} == {needs.API_PORT}
    assert {22, 80} <= {p["port"] for p in services["vm"]["spec"]["ports"]}
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
    for resource in resources:
        labels = resource["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "virtainer" and "app.kubernetes.io/instance" in labels


# ---- our own validation refuses a bad overlay with one line ----------------------------------------


def _bad_overlay(tmp_path: Path, patch: str) -> Path:
    overlay = tmp_path / "bad"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{DEPLOY / 'overlays' / 'one-vm'}]\npatches:\n  - path: patch.yaml\n"
    )
    (overlay / "patch.yaml").write_text(patch)
    return overlay


def _render(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "virtainer.cli", "kube", "render", str(directory)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip


BAD_OVERLAYS = {
    "memory-over-the-limit": (
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: vm}\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: vm\n          env:\n            - {name: RAM, value: '8G'}\n",
        "resources.limits.memory of StatefulSet/vm='4512Mi': at least 8672Mi (RAM 8192 MiB + 480 MiB",
    ),
    "missing-claim": (
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: vm}\nspec:\n  volumeClaimTemplates: null\n",
        "volumeMounts /mounted of StatefulSet/vm='disk': a volumeClaimTemplate of this StatefulSet",
    ),
    "short-grace-period": (
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: vm}\nspec:\n  template:\n    spec:\n"
        "      terminationGracePeriodSeconds: 30\n",
        "terminationGracePeriodSeconds of StatefulSet/vm=30: at least 90",
    ),
    "one-capability-too-many": (
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: vm}\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: vm\n          securityContext:\n"
        "            capabilities: {add: [NET_ADMIN, SYS_ADMIN, SYS_PTRACE]}\n",
        "only NET_ADMIN, SYS_ADMIN, NET_RAW, MKNOD",
    ),
    "unknown-variable": (
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: vm}\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: vm\n          env:\n            - {name: VIRTAINER_MEMROY, value: '1G'}\n",
        "env of StatefulSet/vm='VIRTAINER_MEMROY'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERLAYS))
def test_a_bad_overlay_is_refused_with_one_line(case: str, tmp_path: Path) -> None:
    patch, expected = BAD_OVERLAYS[case]
    overlay = _bad_overlay(tmp_path, patch)
    before = sorted(p.name for p in overlay.iterdir())
    done = _render(overlay)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtainer: error: invalid "), done.stderr
    assert expected in lines[0]
    assert sorted(p.name for p in overlay.iterdir()) == before


def test_the_shipped_overlays_render_through_the_cli() -> None:
    for overlay in OVERLAYS:
        done = _render(DEPLOY / "overlays" / overlay)
        assert done.returncode == 0, done.stderr
        assert list(yaml.safe_load_all(done.stdout)) == rendered(overlay)


def test_check_reads_kubectl_output_from_stdin() -> None:
    text = yaml.safe_dump_all(rendered("fleet"))
    done = subprocess.run(
        [sys.executable, "-m", "virtainer.cli", "kube", "check", "-"],
        input=text, capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "StatefulSet/vm: ok", done.stderr


# ---- the renderer itself -----------------------------------------------------------------------


def test_merge_follows_strategic_merge_rules() -> None:
    original = {
        "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}], "args": ["p", "q"]}],
        "keep": 1,
        "drop": 2,
    }
    patch = {
        "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}], "args": ["r"]}, {"name": "b"}],
        "drop": None,
    }
    merged = kustomize.merge(original, patch)
    assert merged["keep"] == 1 and "drop" not in merged
    assert [c["name"] for c in merged["containers"]] == ["b", "a"]
    container = merged["containers"][1]
    assert sorted(e["name"] for e in container["env"]) == ["X", "Y"]
    assert container["args"] == ["r"]  # a list without a merge key is replaced
    assert original["containers"][0]["args"] == ["p", "q"]  # inputs untouched


@pytest.mark.parametrize(
    ("kustomization", "expected"),
    [
        ("namePrefix: x-\nresources: [a.yaml]\n", "field namePrefix is not supported"),
        ("resources: [missing.yaml]\n", "resource missing.yaml does not exist"),
        ('resources: [a.yaml]\npatches:\n  - patch: \'[{"op": "remove"}]\'\n', "JSON 6902 patches are not supported"),
        ("resources: [a.yaml]\nreplicas: [{name: nothing, count: 2}]\n", "replicas for nothing match no workload"),
    ],
)
def test_the_renderer_refuses_what_it_does_not_do(kustomization: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {}\n")
    (tmp_path / "kustomization.yaml").write_text(kustomization)
    with pytest.raises(kustomize.KustomizeError) as raised:
        kustomize.render(tmp_path)
    assert expected in str(raised.value) and "\n" not in str(raised.value)
