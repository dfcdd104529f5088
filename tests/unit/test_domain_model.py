"""The domain read back the way it is written: every golden domain parses into the values the
renderer laid out (disks, NICs, display, agent channel, virtainer's record)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_domain import CASES
from virtainer.domain import layout_values, render_domain_xml
from virtainer.domain_model import DiskLayout, NicLayout, parse_domain, recorded_stages


@pytest.mark.parametrize("case", sorted(CASES))
def test_parse_domain_reads_back_what_the_renderer_laid_out(case: str) -> None:
    spec, accelerator, seed = CASES[case]
    formats = {Path("/disks/docker.raw"): "raw", spec.diff_path: "qcow2"}
    diff_base = (spec.image.path, "qcow2") if spec.image.path else None
    values = layout_values(spec, accelerator, seed_path=seed, disk_formats=formats, diff_base=diff_base)
    xml = render_domain_xml(spec, accelerator, seed_path=seed, disk_formats=formats, diff_base=diff_base)
    model = parse_domain(xml)

    system, data = values["system_disk"], values["data_disks"]
    assert isinstance(system, DiskLayout) and isinstance(data, list)
    assert model.disks[: 1 + len(data)] == (system, *data)
    assert model.disk_of(spec.diff_path) == system  # found by its file, whatever its target
    if seed is not None:
        assert model.disks[-1].path == str(seed) and model.disks[-1].readonly
    nic = values["nic"]
    if isinstance(nic, NicLayout):
        assert model.nics == (nic,)
    elif spec.network.mode == "user":
        assert [each.mac for each in model.nics] == [spec.mac_address or model.nics[0].mac]
        assert model.nics[0].type == "user" and model.nics[0].model == spec.nic_model
    else:
        assert model.nics == ()
    assert model.name == spec.name and model.vcpus == spec.vcpus and model.memory_kib == spec.memory_mib * 1024
    assert model.machine == spec.machine and model.agent_channel
    assert model.metadata["diff"] == str(spec.diff_path)
    assert model.metadata["accelerator"] == accelerator.kind
    assert model.video == values["video"]
    assert (model.vnc is None) == (values["graphics"] is None and not values["private_vnc"])


def test_forwarded_ssh_port_is_read_from_the_user_netdev() -> None:
    spec, accelerator, seed = CASES["escaping-user-network"]
    model = parse_domain(render_domain_xml(spec, accelerator, seed_path=seed))
    forwarded = [rule for rule in spec.network.ports or () for pair in rule.pairs() if pair[1] == 22]
    assert (model.forwarded_port(22) is not None) == bool(forwarded)
    assert model.forwarded_port(1) is None


def test_the_recorded_stages_are_read_back_in_readiness_order() -> None:
    spec, accelerator, seed = CASES["cloud-tcg-nat"]
    model = parse_domain(render_domain_xml(spec, accelerator, seed_path=seed))
    assert recorded_stages(model.metadata) == spec.wait_for
    assert recorded_stages({"wait-for": "ssh,running"}) == ("running", "ssh")
    assert recorded_stages({}) == recorded_stages({"wait-for": ""}) == ("running",)  # recorded before stages were
