"""The controller's pure logic, without Docker: settings layering, subnet choice, iptables rules,
network XML, capabilities, log lines. (The real thing runs in the other test modules.)"""

from __future__ import annotations

import io
import ipaddress
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from virtainer.controller import network, preflight
from virtainer.controller.config import BakedImage, container_settings, controller_config
from virtainer.controller.logsink import ContainerReporter, LogSink
from virtainer.errors import ConfigError
from virtainer.readiness import StageRecord

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth1\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


def test_routes_are_parsed_without_the_default_route() -> None:
    assert network.parse_routes(ROUTES) == [
        ipaddress.IPv4Network("172.17.0.0/16"),
        ipaddress.IPv4Network("192.168.122.0/24"),
    ]


def test_guest_subnet_avoids_the_container_routes_and_dockers_default() -> None:
    routes = network.parse_routes(ROUTES)
    assert network.choose_subnet(routes) == ipaddress.IPv4Network("192.168.123.0/24")
    assert network.choose_subnet([]) == ipaddress.IPv4Network("192.168.122.0/24")
    assert network.choose_subnet([], ["172.17.5.0/24", "10.1.0.0/24"]) == ipaddress.IPv4Network("10.1.0.0/24")
    with pytest.raises(network.NetworkSetupError, match="no free subnet"):
        network.choose_subnet([ipaddress.IPv4Network("0.0.0.0/1"), ipaddress.IPv4Network("128.0.0.0/1")])


def test_dnat_rules_keep_the_controller_ports_and_never_snat_inbound() -> None:
    net = network.GuestNetwork(ipaddress.IPv4Network("192.168.122.0/24"), "52:54:00:00:00:01")
    rules = network.dnat_rules(net, controller_ports=(8443, 9000))
    assert ["-A", "VIRTAINER-DNAT", "-i", "virtainer0", "-j", "RETURN"] in rules
    keep = ["-A", "VIRTAINER-DNAT", "-p", "tcp", "-m", "multiport", "--dports", "8443,9000", "-j", "RETURN"]
    dnat_tcp = ["-A", "VIRTAINER-DNAT", "-p", "tcp", "-j", "DNAT", "--to-destination", "192.168.122.2"]
    assert rules.index(keep) < rules.index(dnat_tcp)
    assert rules[-1] == ["-A", "VIRTAINER-DNAT", "-p", "udp", "-j", "DNAT", "--to-destination", "192.168.122.2"]
    assert all("SNAT" not in rule and "MASQUERADE" not in rule for rule in rules)
    (masquerade,) = network.masquerade_rules(net)
    assert masquerade == ["-A", "VIRTAINER-MASQ", "-s", "192.168.122.0/24", "!", "-d", "192.168.122.0/24",
                          "-j", "MASQUERADE"]  # fmt: skip


def test_network_xml_pins_the_guest_address_to_its_mac() -> None:
    net = network.GuestNetwork(ipaddress.IPv4Network("10.213.0.0/24"), "52:54:00:ab:cd:ef")
    root = ET.fromstring(network.network_xml(net))
    assert root.findtext("name") == "default"
    assert root.find("forward").get("mode") == "open"  # type: ignore[union-attr]
    assert root.find("ip").get("address") == "10.213.0.1"  # type: ignore[union-attr]
    host = root.find("ip/dhcp/host")
    assert host is not None and host.get("mac") == "52:54:00:ab:cd:ef" and host.get("ip") == "10.213.0.2"


def test_settings_layers_baked_then_mounted_files_then_environment(tmp_path: Path) -> None:
    key = tmp_path / "id_rsa.pub"
    key.write_text("ssh-ed25519 AAAA test\n")
    baked = BakedImage(Path("/var/lib/virtainer/images/base.img"), "debian12", "ab" * 32, "file")
    raw = container_settings({"RAM": "2048"}, baked=baked, mounted={"ssh_keys": key, "user_data": tmp_path / "x"})
    assert raw["image"].value == "/var/lib/virtainer/images/base.img"
    assert raw["os_variant"].value == "debian12"
    assert raw["image_dir"].value == "/mounted"
    assert raw["ssh_keys"].value == [str(key)] and "mounted file" in raw["ssh_keys"].origin
    assert raw["memory"].value == "2048" and raw["memory"].origin == "RAM"
    assert "user_data" not in raw
    # naming another image drops the baked one (and its OS variant); env beats the defaults
    raw = container_settings({"IMAGE_URL": "http://x/y.img", "IMAGE_DIR": "/data"}, baked=baked, mounted={})
    assert "image" not in raw and "os_variant" not in raw
    assert raw["image_dir"].value == "/data" and raw["image_dir"].origin == "IMAGE_DIR"


def test_a_mounted_directory_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Docker makes one"):
        container_settings({}, baked=None, mounted={"ssh_keys": tmp_path})


def test_controller_settings_are_validated() -> None:
    assert controller_config({"VIRTAINER_CONTROLLER_PORTS": "8443, 9000"}).controller_ports == (8443, 9000)
    assert controller_config({}).console_log is True
    with pytest.raises(ConfigError, match="VIRTAINER_CONTROLLER_PORTS"):
        controller_config({"VIRTAINER_CONTROLLER_PORTS": "70000"})
    with pytest.raises(ConfigError, match="VIRTAINER_CONSOLE_LOG"):
        controller_config({"VIRTAINER_CONSOLE_LOG": "maybe"})


def test_capabilities_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t00000000a80425fb\n")  # Docker's default set
    caps = preflight.Capabilities.current(status)
    assert caps.has(preflight.CAP_MKNOD)
    assert not caps.has(preflight.CAP_NET_ADMIN) and not caps.has(preflight.CAP_SYS_ADMIN)
    with pytest.raises(preflight.ContainerSetupError, match="--cap-add NET_ADMIN"):
        preflight.check_network_capabilities(caps)


def test_log_lines_start_on_their_own_line_after_console_output() -> None:
    stream = io.BytesIO()
    sink = LogSink(stream, origin=0.0)
    sink.console(b"guest says hel")
    ContainerReporter(sink).stage(StageRecord("ip", at=0.0, elapsed_s=51.23, detail="192.168.122.2 (lease)"))
    lines = stream.getvalue().decode().splitlines()
    assert lines[0] == "guest says hel"
    assert lines[1].startswith("[virtainer ") and lines[1].endswith(
        "] stage ip: 192.168.122.2 (lease), 51.2 s after domain start"
    )
