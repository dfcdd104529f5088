"""The compose examples ask for what the container needs (virtainer.orchestration.needs), with
the settings of their .env files. The real compose runs are in tests/container/test_compose.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.container.orchestration import EXAMPLES, dotenv
from virtainer.orchestration import needs

COMPOSE_FILES = [EXAMPLES / "compose.yaml", EXAMPLES / "multi-vm" / "compose.yaml"]


def interpolated(path: Path) -> dict[str, Any]:
    """${NAME:-default} as compose reads it, with the .env beside the file (if any)."""
    env = path.parent / ".env"
    settings = dotenv(env) if env.exists() else {}

    def value(match: re.Match[str]) -> str:
        return settings.get(match.group(1), match.group(2) or "")

    return yaml.safe_load(re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", value, path.read_text()))


def seconds(text: str) -> int:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return int(match.group(1))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.parent.name)
def test_each_vm_service_has_what_the_container_needs(path: Path) -> None:
    services = interpolated(path)["services"]
    vms = {name: s for name, s in services.items() if "cap_add" in s}
    assert vms, "no VM service"
    for name, service in vms.items():
        assert tuple(service["cap_add"]) == needs.NETWORK_CAPABILITIES, name
        assert "privileged" not in service
        assert set(service["environment"]) <= needs.accepted_env_names()
        diff_volume = next(v for v in service["volumes"] if v.endswith(f":{needs.DIFF_MOUNT}"))
        assert diff_volume.split(":")[0] in interpolated(path)["volumes"], "the diff on a named volume"
        stop_timeout = int(service["environment"]["VIRTAINER_STOP_TIMEOUT"])
        assert seconds(service["stop_grace_period"]) >= needs.grace_period_s(stop_timeout)
        assert service["healthcheck"]["test"] == ["CMD", "/usr/local/bin/virtainer-healthcheck"]
        assert int(service["environment"]["RAM"]) >= 256


def test_the_swarm_stack_gives_each_slot_its_own_diff_and_the_needed_capabilities() -> None:
    stack = interpolated(EXAMPLES / "swarm" / "stack.yaml")
    assert stack["volumes"]["vm-disk"]["name"] == "{{.Service.Name}}-disk-{{.Task.Slot}}"  # unique per stack
    for name, service in stack["services"].items():
        assert tuple(service["cap_add"]) == needs.NETWORK_CAPABILITIES, name
        assert "devices" not in service and "privileged" not in service  # Swarm applies neither
        assert service["deploy"]["update_config"]["order"] == "stop-first"  # one task per diff
        (diff,) = [v for v in service["volumes"] if v.endswith(f":{needs.DIFF_MOUNT}")]
        assert "{{.Task.Slot}}" in stack["volumes"][diff.split(":")[0]]["name"]
        stop_timeout = int(service["environment"]["VIRTAINER_STOP_TIMEOUT"])
        assert seconds(service["stop_grace_period"]) >= needs.grace_period_s(stop_timeout)
        assert set(service["environment"]) <= needs.accepted_env_names()


def test_the_plain_service_waits_for_healthy_vms() -> None:
    services = interpolated(EXAMPLES / "multi-vm" / "compose.yaml")["services"]
    assert services["client"]["depends_on"] == {vm: {"condition": "service_healthy"} for vm in ("vm1", "vm2")}
    assert "cap_add" not in services["client"]
