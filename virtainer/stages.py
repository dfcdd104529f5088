"""The readiness stages, in one place: their names and order, the ones a VM waits for unless told
otherwise, and which of them are still missing. The spec, the readiness wait (readiness.py),
the domain's record of them (domain_model.py), the status and the API's /readyz all ask here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Stage = Literal["running", "ip", "agent", "cloud-init", "ssh", "exec"]

STAGES: tuple[Stage, ...] = ("running", "ip", "agent", "cloud-init", "ssh")
# exec: the user's own probe (wait_for=...,exec:CMD), ready when CMD exits 0 in the guest, after the rest
ALL_STAGES: tuple[Stage, ...] = (*STAGES, "exec")
EXEC_PROBE = "exec:"


def in_order(names: Iterable[str]) -> tuple[Stage, ...]:
    """The stages among `names`, in readiness order (unknown names are left out)."""
    named = set(names)
    return tuple(stage for stage in ALL_STAGES if stage in named)


def missing_stages(wanted: Iterable[str], reached: Iterable[str]) -> list[str]:
    """The wanted stages not reached yet, in the order they are wanted: [] when all are."""
    done = set(reached)
    return [stage for stage in wanted if stage not in done]


def default_stages(
    *, direct_boot: bool, cloud_image: bool, network_mode: str, ssh_reachable: bool, exec_probe: bool
) -> tuple[Stage, ...]:
    """What a VM waits for when its spec does not say (wait_for=auto).

    ssh_reachable: the guest's SSH can be reached from here (not with user-mode networking that
    forwards no port to the guest's 22)."""
    stages = _boot_stages(direct_boot, cloud_image, network_mode, ssh_reachable)
    return (*stages, "exec") if exec_probe else stages


def _boot_stages(direct_boot: bool, cloud_image: bool, network_mode: str, ssh_reachable: bool) -> tuple[Stage, ...]:
    if direct_boot:
        return ("running",)  # a bare kernel has no agent or cloud-init to wait for
    if not cloud_image:
        return ("running",) if network_mode == "none" else ("running", "ip")
    if network_mode == "none":
        return ("running", "agent", "cloud-init")
    if not ssh_reachable:
        return ("running", "ip", "agent", "cloud-init")
    return STAGES
