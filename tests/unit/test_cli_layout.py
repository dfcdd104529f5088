"""The command line reads like a tool: help names what a flag takes (`--memory SIZE`, not
SPEC_MEMORY), and `virtainer status` keeps each VM's name, state and address whole in 80 columns."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from tests.unit.driver import TEST_DRIVER, DriverVm, driver_vm
from virtainer import cli
from virtainer.api.fleet import Member
from virtainer.cli_layout import HEADERS, status_table
from virtainer.cli_output import Output
from virtainer.guest import GuestFacts
from virtainer.hypervisor import DomainState, Hypervisor, InterfaceAddress
from virtainer.operations import VmDiff, VmReadiness, VmStatus
from virtainer.orchestration.commands import fleet_table
from virtainer.readiness import StageRecord


def help_of(command: str) -> str:
    parser = cli.build_parser()
    choices = next(action for action in parser._actions if action.dest == "command").choices
    assert isinstance(choices, dict)
    return str(choices[command].format_help())


@pytest.mark.parametrize("command", ["up", "render"])
def test_help_names_what_each_setting_takes(command: str) -> None:
    text = help_of(command)
    for shown in ("--memory SIZE", "--vcpus N", "--disk-size SIZE", "--image PATH", "--boot-timeout SECONDS",
                  "--accelerator auto|kvm|tcg", "-f FILE, --config FILE"):  # fmt: skip
        assert shown in text, shown
    assert "SPEC_" not in text


def rendered(statuses: list[VmStatus], width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), record=True, highlight=False)
    console.print(status_table(statuses, console.width))
    return console.export_text().splitlines()


STAGES = [StageRecord(stage, 1.0, elapsed) for stage, elapsed in
          (("running", 0.4), ("ip", 11.8), ("agent", 19.6), ("cloud-init", 31.2), ("ssh", 33.0))]  # fmt: skip
BUSY = VmStatus(
    name="web-frontend-production-01", state=DomainState.RUNNING.value, accelerator="tcg", accelerator_reason="",
    vcpus=2, memory_mib=1024,
    addresses=[InterfaceAddress("52:54:00:12:34:56", "192.168.122.143", 24, "lease"),
               InterfaceAddress("52:54:00:12:34:57", "10.231.117.254", 24, "agent")],
    readiness=VmReadiness(True, ["running", "ip", "agent", "cloud-init", "ssh"], STAGES),
    diff=VmDiff("/var/lib/virtainer/vms/web-frontend-production-01/diff.qcow2", None),
    guest=GuestFacts(os_id="debian", os_version_id="12"),
)  # fmt: skip
IDLE = VmStatus(
    name="db", state=DomainState.SHUT_OFF.value, accelerator="kvm", accelerator_reason="", vcpus=4, memory_mib=8192,
    addresses=[], readiness=VmReadiness(False, ["running"], []), diff=VmDiff("", None),
)  # fmt: skip


@pytest.mark.parametrize("width", [80, 60])
def test_the_status_table_keeps_name_state_and_address_whole(width: int) -> None:
    lines = rendered([BUSY, IDLE], width)
    assert all(len(line.rstrip()) <= width for line in lines), lines
    text = "\n".join(lines)
    for whole in ("web-frontend-production-01", "running", "192.168.122.143", "10.231.117.254", "db", "shut-off"):
        assert whole in text, (whole, lines)
    assert "…" not in text  # what does not fit is left out, never cut
    assert lines[0].split()[:3] == ["name", "state", "address"]


def test_a_wide_terminal_shows_every_column_whole() -> None:
    text = "\n".join(rendered([BUSY, IDLE], 200))
    for header in HEADERS:
        assert header in text
    assert BUSY.diff.path in text and "cloud-init@31s ssh@33s" in text and "debian 12" in text


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[DriverVm]:
    with Hypervisor(TEST_DRIVER) as hv, driver_vm(tmp_path, hv) as made:
        yield made


def test_virtainer_status_in_80_columns(vm: DriverVm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command itself, in-process on the test driver (its state is this process's)."""
    console = Console(width=80, file=io.StringIO(), record=True, highlight=False)
    monkeypatch.setattr(cli, "out", Output(stderr=False, markup=False, console=console))
    assert cli.main(["--connect", TEST_DRIVER, "status", vm.name]) == 0
    lines = console.export_text().splitlines()
    (row,) = (line for line in lines if line.startswith(vm.name))
    name, state, address = row.split()[:3]
    assert (name, state) == (vm.name, "running") and address.count(".") == 3, lines
    assert all(len(line.rstrip()) <= 80 for line in lines)


def test_the_fleet_view_is_the_status_table_with_a_source_column() -> None:
    member = Member("http://172.17.0.12:8470", "http://172.17.0.12:8470", [BUSY, IDLE])
    dead = Member("fleet-gamma", "http://127.0.0.1:9", [], "cannot reach the API")
    console = Console(width=80, file=io.StringIO(), record=True, highlight=False, soft_wrap=True)  # as the CLI's
    console.print(fleet_table([member, dead], 80))  # 81 columns: the source, name, state and address whole
    lines = console.export_text().splitlines()
    assert lines[0].split()[:4] == ["source", "name", "state", "address"]
    rows = [line.split() for line in lines[2:] if not line.startswith(" ")]  # not a second address's line
    assert [row[:3] for row in rows] == [
        [member.source, BUSY.name, "running"], [member.source, IDLE.name, "shut-off"],
        [dead.source, "-", "unreachable"],
    ]  # fmt: skip
    assert "192.168.122.143" in lines[2] and "10.231.117.254" in lines[3]
