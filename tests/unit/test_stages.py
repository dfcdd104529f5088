"""The readiness stages' one home (virtainer/stages.py): order, defaults and what is missing, as the
spec, the readiness wait, the status and the API's /readyz see them."""

from __future__ import annotations

import time

import pytest

from virtainer import operations, readiness, spec
from virtainer.readiness import Readiness, StageRecord
from virtainer.stages import ALL_STAGES, STAGES, default_stages, in_order, missing_stages


def test_the_old_import_paths_name_the_same_stages() -> None:
    assert (spec.STAGES, spec.ALL_STAGES, spec.EXEC_PROBE) == (STAGES, ALL_STAGES, "exec:")
    assert ALL_STAGES == ("running", "ip", "agent", "cloud-init", "ssh", "exec")


def test_in_order_keeps_readiness_order_and_drops_unknown_names() -> None:
    assert in_order(["ssh", "bogus", "running", "exec", ""]) == ("running", "ssh", "exec")


def test_missing_stages_keeps_the_wanted_order() -> None:
    assert missing_stages(("running", "ip", "ssh"), {"ip"}) == ["running", "ssh"]
    assert missing_stages(("running",), ["running", "ssh"]) == []


@pytest.mark.parametrize(
    ("direct_boot", "cloud_image", "network_mode", "ssh_reachable", "expected"),
    [
        (True, True, "network", True, ("running",)),
        (False, False, "none", True, ("running",)),
        (False, False, "network", True, ("running", "ip")),
        (False, True, "none", True, ("running", "agent", "cloud-init")),
        (False, True, "user", False, ("running", "ip", "agent", "cloud-init")),
        (False, True, "network", True, STAGES),
    ],
)
def test_default_stages(
    direct_boot: bool, cloud_image: bool, network_mode: str, ssh_reachable: bool, expected: tuple[str, ...]
) -> None:
    chosen = dict(direct_boot=direct_boot, cloud_image=cloud_image, network_mode=network_mode,
                  ssh_reachable=ssh_reachable)  # fmt: skip
    assert default_stages(**chosen, exec_probe=False) == expected
    assert default_stages(**chosen, exec_probe=True) == (*expected, "exec")


def test_the_wait_and_the_status_agree_on_what_is_missing() -> None:
    wait = Readiness(time.time(), ("running", "ip", "ssh"))
    wait.reached["ip"] = StageRecord("ip", 1.0, 0.5)
    status = operations.VmReadiness(False, list(wait.wanted), wait.records())
    assert wait.missing == status.missing == ["running", "ssh"] and not wait.ready
    assert readiness.Readiness(0.0, ("running",), {"running": StageRecord("running", 1.0, 0.1)}).ready
