"""What the container knows enters resolve_spec as facts: the NAT network's LAN and ports are
decided there, and without NET_ADMIN user-mode networking takes its place, once."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from virtainer.controller import preflight
from virtainer.errors import ConfigError
from virtainer.spec import STAGES, ContainerFacts, HostFacts, VmSpec, resolve_spec, settings_from_env

IN_CONTAINER = HostFacts(cpus=2, memory_mib=4096, in_container=True)
ROUTES = (ipaddress.IPv4Network("172.17.0.0/16"), ipaddress.IPv4Network("192.168.122.0/24"))
NAT = ContainerFacts(routes=ROUTES, net_admin=True, api_ports=(8470,), reserved_ports=(("udp", (9000, 9010)),))
NO_NET_ADMIN = ContainerFacts(routes=ROUTES, net_admin=False, api_ports=(8470,))


def resolve(environ: dict[str, str], facts: ContainerFacts, tmp_path: Path) -> VmSpec:
    image = tmp_path / "base.qcow2"
    image.write_bytes(b"QFI\xfb")
    return resolve_spec(settings_from_env({"IMAGE": str(image), **environ}), IN_CONTAINER, facts)


def test_the_nat_network_gets_a_lan_that_overlaps_no_route(tmp_path: Path) -> None:
    net = resolve({}, NAT, tmp_path).network
    assert (net.mode, net.lan, net.ports, net.user_mode_fallback) == (
        "network", ipaddress.IPv4Network("192.168.123.0/24"), None, False
    )  # fmt: skip
    assert resolve({"VM_GUEST_LAN": "10.9.0.0/24"}, NAT, tmp_path).network.lan == ipaddress.IPv4Network("10.9.0.0/24")
    with pytest.raises(ConfigError, match=r"invalid VM_GUEST_LAN='172.17.5.0/24': a LAN overlapping none"):
        resolve({"VM_GUEST_LAN": "172.17.5.0/24"}, NAT, tmp_path)


@pytest.mark.parametrize(
    ("environ", "reserved"),
    [
        ({"VIRTAINER_PORTS": "tcp:8470:80"}, "tcp/8470 (REST API)"),
        ({"VIRTAINER_PORTS": "udp:9005:53"}, "udp/9000-9010 (VIRTAINER_RESERVED_PORTS)"),
        ({"VM_TCP_PORTS": '("0.0.0.0:5999:5999")', "VM_GUEST_VNC": "1"}, "tcp/5999 (VNC)"),
    ],
)
def test_port_rules_leave_the_containers_own_ports(environ: dict[str, str], reserved: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"ports other than the container's own: {reserved}")):
        resolve(environ, NAT, tmp_path)


def test_a_rule_target_lies_in_the_chosen_lan(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid VIRTAINER_PORTS='tcp:2222:10.0.0.5:22': .*192.168.123.0/24"):
        resolve({"VIRTAINER_PORTS": "tcp:2222:10.0.0.5:22"}, NAT, tmp_path)


def test_without_net_admin_user_mode_networking_forwards_ssh(tmp_path: Path) -> None:
    spec = resolve({}, NO_NET_ADMIN, tmp_path)
    net = spec.network
    assert (net.mode, net.source, net.user_mode_fallback) == ("user", "", True)
    assert [rule.describe() for rule in net.ports or ()] == ["tcp:22->22"]
    assert spec.wait_for == STAGES  # the guest's SSH is reachable: waited for


def test_without_net_admin_and_without_port_22_ssh_is_not_waited_for(tmp_path: Path) -> None:
    spec = resolve({"VIRTAINER_PORTS": "tcp:8080:80"}, NO_NET_ADMIN, tmp_path)
    assert "ssh" not in spec.wait_for and spec.wait_for[0] == "running"
    explicit = resolve({"VIRTAINER_PORTS": "tcp:8080:80", "VIRTAINER_WAIT_FOR": "running,ssh"}, NO_NET_ADMIN, tmp_path)
    assert explicit.wait_for == ("running", "ssh")  # what the user asked for stands
    with pytest.raises(ConfigError, match="at most 1024 ports with user-mode networking"):
        resolve({"VIRTAINER_PORTS": "tcp:10000-12000"}, NO_NET_ADMIN, tmp_path)


def test_other_networks_are_left_as_they_are(tmp_path: Path) -> None:
    assert resolve({"VIRTAINER_NETWORK": "user"}, NO_NET_ADMIN, tmp_path).network.user_mode_fallback is False
    assert resolve({"VIRTAINER_NETWORK": "none"}, NAT, tmp_path).network.lan is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"VM_GUEST_TCP_FWDS": '("10.9.9.9:80:172.17.0.1:8080")'}, "VM_GUEST_TCP_FWDS needs the NET_ADMIN capability"),
        ({"VM_GUEST_RESTRICT": "1"}, "VM_GUEST_RESTRICT needs the NET_ADMIN capability"),
        ({"VM_GUEST_VNC": "1"}, "VM_GUEST_VNC with user-mode networking would let the guest reach its own VNC"),
    ],
)
def test_what_user_mode_cannot_do_is_refused_naming_the_flag(
    environ: dict[str, str], message: str, tmp_path: Path
) -> None:
    spec = resolve(environ, NO_NET_ADMIN, tmp_path)
    (name,) = environ
    with pytest.raises(preflight.ContainerSetupError, match=message):
        preflight.check_user_mode(spec, lambda _key: name, guest_control_access=False)
    if "VNC" in name:
        preflight.check_user_mode(spec, lambda _key: name, guest_control_access=True)  # accepted: no error
