"""The controller's pure logic, without Docker: settings layering, subnet choice, iptables rules,
network XML, capabilities, log lines. (The real thing runs in the other test modules.)"""

from __future__ import annotations

import io
import ipaddress
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from virtainer.controller import network, preflight
from virtainer.controller.config import BakedImage, container_settings, controller_config
from virtainer.controller.logsink import ContainerReporter, LogSink
from virtainer.errors import ConfigError
from virtainer.readiness import StageRecord
from virtainer.spec import parse_guest_forwards, parse_port_rule, parse_port_rules

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


LAN = ipaddress.IPv4Network("192.168.122.0/24")
MAC = "52:54:00:00:00:01"
RESERVED = (network.ReservedPort("tcp", (8470, 8470), "REST API"), network.ReservedPort("udp", (9000, 9010), "x"))


def test_dnat_rules_keep_the_controller_ports_and_never_snat_inbound() -> None:
    net = network.GuestNetwork(LAN, MAC, reserved=RESERVED)
    rules = network.dnat_rules(net)
    assert ["-A", "VIRTAINER-DNAT", "-i", "virtainer0", "-j", "RETURN"] in rules
    keep = ["-A", "VIRTAINER-DNAT", "-p", "tcp", "--dport", "8470", "-j", "RETURN"]
    keep_range = ["-A", "VIRTAINER-DNAT", "-p", "udp", "--dport", "9000:9010", "-j", "RETURN"]
    dnat_tcp = ["-A", "VIRTAINER-DNAT", "-p", "tcp", "-j", "DNAT", "--to-destination", "192.168.122.2"]
    assert rules.index(keep) < rules.index(dnat_tcp) and rules.index(keep_range) < rules.index(dnat_tcp)
    assert rules[-1] == ["-A", "VIRTAINER-DNAT", "-p", "udp", "-j", "DNAT", "--to-destination", "192.168.122.2"]
    assert all("SNAT" not in rule and "MASQUERADE" not in rule for rule in rules)
    assert network.isolation_rules(net) == []
    (masquerade,) = network.masquerade_rules(net)
    assert masquerade == ["-A", "VIRTAINER-MASQ", "-s", "192.168.122.0/24", "!", "-d", "192.168.122.0/24",
                          "-j", "MASQUERADE"]  # fmt: skip


def test_explicit_port_rules_forward_only_their_ports() -> None:
    rules_spec = parse_port_rules(
        "tcp:8080:80 udp:5353:53 tcp:9000-9002 tcp:7000-7001:8000-8001 tcp:2222:192.168.122.9:22"
    )
    rules = network.dnat_rules(network.GuestNetwork(LAN, MAC, ports=rules_spec, reserved=RESERVED))
    dnat = [rule[2:] for rule in rules if "DNAT" in rule]
    assert dnat == [
        ["-p", "tcp", "--dport", "8080", "-j", "DNAT", "--to-destination", "192.168.122.2:80"],
        ["-p", "udp", "--dport", "5353", "-j", "DNAT", "--to-destination", "192.168.122.2:53"],
        ["-p", "tcp", "--dport", "9000:9002", "-j", "DNAT", "--to-destination", "192.168.122.2"],
        ["-p", "tcp", "--dport", "7000", "-j", "DNAT", "--to-destination", "192.168.122.2:8000"],
        ["-p", "tcp", "--dport", "7001", "-j", "DNAT", "--to-destination", "192.168.122.2:8001"],
        ["-p", "tcp", "--dport", "2222", "-j", "DNAT", "--to-destination", "192.168.122.9:22"],
    ]
    # no catch-all, and nothing for the reserved ports (explicit rules never name them)
    assert not any("RETURN" in rule and "--dport" in rule for rule in rules)
    assert network.dnat_rules(network.GuestNetwork(LAN, MAC, ports=()))[-1][-1] == "RETURN"  # `none`: no port


def test_guest_forwards_and_isolation_rules() -> None:
    forwards = parse_guest_forwards("tcp:10.9.9.9:80:172.17.0.1:8080 udp:10.9.9.9:53:1.1.1.1:53")
    net = network.GuestNetwork(LAN, MAC, forwards=forwards, restrict=True)
    rules = network.dnat_rules(net)
    assert rules[:2] == [
        ["-A", "VIRTAINER-DNAT", "-i", "virtainer0", "-p", "tcp", "-d", "10.9.9.9", "--dport", "80",
         "-j", "DNAT", "--to-destination", "172.17.0.1:8080"],
        ["-A", "VIRTAINER-DNAT", "-i", "virtainer0", "-p", "udp", "-d", "10.9.9.9", "--dport", "53",
         "-j", "DNAT", "--to-destination", "1.1.1.1:53"],
    ]  # fmt: skip
    isolation = network.isolation_rules(net)
    for chain in ("VIRTAINER-FWD", "VIRTAINER-INPUT"):
        mine = [rule for rule in isolation if rule[1] == chain]
        assert mine[0][-4:] == ["--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]
        assert mine[1][-4:] == ["--ctstate", "DNAT", "-j", "ACCEPT"]
        assert mine[-1] == ["-A", chain, "-i", "virtainer0", "-j", "REJECT"]
        assert all(network.rule_table(rule) == "filter" for rule in mine)
    assert ["-A", "VIRTAINER-INPUT", "-i", "virtainer0", "-p", "udp", "--dport", "67", "-j", "ACCEPT"] in isolation


def test_reserved_ports_overlap_rules_and_lans_overlap_routes() -> None:
    api, extra = RESERVED
    assert api.overlaps(parse_port_rule("tcp:8400-8500:8400-8500"))
    assert not api.overlaps(parse_port_rule("udp:8470"))
    assert extra.overlaps(parse_port_rule("udp:9010:53")) and not extra.overlaps(parse_port_rule("udp:9011:53"))
    routes = network.parse_routes(ROUTES)
    assert network.check_lan(ipaddress.IPv4Network("172.17.5.0/24"), routes) is not None
    assert network.check_lan(ipaddress.IPv4Network("192.168.199.0/24"), routes) is None
    small = network.GuestNetwork(ipaddress.IPv4Network("10.1.2.0/29"), MAC)
    assert [str(address) for address in small.dhcp_range] == ["10.1.2.4", "10.1.2.6"]
    default_range = network.GuestNetwork(LAN, MAC).dhcp_range
    assert [str(address) for address in default_range] == ["192.168.122.100", "192.168.122.254"]


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
    config = controller_config({"VIRTAINER_CONTROLLER_PORTS": "8443, 9000"})  # the former name
    assert config.reserved_ports == (("tcp", (8443, 8443)), ("tcp", (9000, 9000)))
    config = controller_config({"VIRTAINER_RESERVED_PORTS": "8443 udp:53 tcp:9000-9010"})
    assert config.reserved_ports == (("tcp", (8443, 8443)), ("udp", (53, 53)), ("tcp", (9000, 9010)))
    assert controller_config({}).console_log is True
    with pytest.raises(ConfigError, match="VIRTAINER_CONTROLLER_PORTS"):
        controller_config({"VIRTAINER_CONTROLLER_PORTS": "70000"})
    for bad in ("http", "sctp:80", "9010-9000", "0"):
        with pytest.raises(ConfigError, match="VIRTAINER_RESERVED_PORTS='"):
            controller_config({"VIRTAINER_RESERVED_PORTS": bad})
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


NOT_ROOT = "making a device node needs root (CAP_MKNOD); the fast tier runs as anyone"


@pytest.mark.skipif(os.geteuid() != 0, reason=NOT_ROOT)
def test_the_tun_device_preflight_says_when_it_created_the_node(tmp_path: Path) -> None:
    device = tmp_path / "net" / "tun"
    caps = preflight.Capabilities(1 << preflight.CAP_MKNOD)
    assert preflight.ensure_tun_device(caps, device) == f"created {device}"  # the controller logs it
    assert preflight.ensure_tun_device(caps, device) is None  # there already, as under --privileged


def test_the_tun_device_preflight_names_the_missing_capability(tmp_path: Path) -> None:
    with pytest.raises(preflight.ContainerSetupError, match="CAP_MKNOD is missing"):
        preflight.ensure_tun_device(preflight.Capabilities(0), tmp_path / "other" / "tun")


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


def test_guard_rules_close_the_control_ports_to_the_guest_only() -> None:
    api = network.ReservedPort("tcp", (8470, 8470), "REST API")
    vnc = network.ReservedPort("tcp", (5900, 5900), "VNC")
    net = network.GuestNetwork(LAN, MAC, reserved=RESERVED, guarded=(api, vnc))
    assert network.guard_rules(net) == [
        ["-A", "VIRTAINER-INPUT", "-i", "virtainer0", "-p", "tcp", "--dport", "8470", "-j", "REJECT",
         "--reject-with", "tcp-reset"],
        ["-A", "VIRTAINER-INPUT", "-i", "virtainer0", "-p", "tcp", "--dport", "5900", "-j", "REJECT",
         "--reject-with", "tcp-reset"],
    ]  # fmt: skip
    assert all(network.rule_table(rule) == "filter" for rule in network.guard_rules(net))
    assert network.guard_rules(network.GuestNetwork(LAN, MAC, reserved=RESERVED)) == []  # opened
    assert controller_config({}).guest_control_access is False
    assert controller_config({"VIRTAINER_GUEST_CONTROL_ACCESS": "yes"}).guest_control_access is True
    with pytest.raises(ConfigError, match="VIRTAINER_GUEST_CONTROL_ACCESS='maybe'"):
        controller_config({"VIRTAINER_GUEST_CONTROL_ACCESS": "maybe"})


def test_one_iptables_restore_declares_hooks_once_and_keeps_the_rules_order() -> None:
    api = network.ReservedPort("tcp", (8470, 8470), "REST API")
    net = network.GuestNetwork(LAN, MAC, reserved=RESERVED, guarded=(api,))
    fresh = network.restore_input(net, hooked=set()).splitlines()
    assert fresh[:4] == [
        "*nat",
        ":VIRTAINER-DNAT - [0:0]",
        ":VIRTAINER-MASQ - [0:0]",
        "-I PREROUTING 1 -j VIRTAINER-DNAT",
    ]
    assert "*filter" in fresh and fresh.count("COMMIT") == 2
    rules = [line for line in fresh if line.startswith("-A ")]
    assert rules == [" ".join(rule) for rule in network.all_rules(net)]  # every rule, in order, nat's first
    again = network.restore_input(net, hooked={("PREROUTING", "VIRTAINER-DNAT"), ("INPUT", "VIRTAINER-INPUT")})
    assert "-I PREROUTING 1 -j VIRTAINER-DNAT" not in again and "-I INPUT 1 -j VIRTAINER-INPUT" not in again
    assert "-I POSTROUTING 1 -j VIRTAINER-MASQ" in again  # a missing hook is still inserted
    with pytest.raises(network.NetworkSetupError, match="blank or quote"):
        network._restore_line(["-A", "VIRTAINER-DNAT", "-m", "comment", "--comment", "a b"])


def test_the_api_settings_are_checked_by_a_child_process_that_names_a_bad_one(tmp_path: Path) -> None:
    from virtainer.api import container as api_container

    environ = {"VIRTAINER_API_LISTEN": "127.0.0.1", "VIRTAINER_API_PORT": "0",
               "VIRTAINER_API_TOKEN_FILE": str(tmp_path / "token")}  # fmt: skip
    checked = api_container.check(environ, "vm")
    assert checked is not None
    assert (checked.listen, checked.port, checked.token, checked.token_file) == (
        "127.0.0.1",
        0,
        None,
        tmp_path / "token",
    )
    assert checked.settings().vms == ("vm",) and not checked.settings().refuse_local_peers
    with pytest.raises(ConfigError, match="invalid VIRTAINER_API_TOKEN='\\*\\*\\*': at least 16 characters"):
        api_container.check({**environ, "VIRTAINER_API_TOKEN": "short"}, "vm")
    with pytest.raises(ConfigError, match="VIRTAINER_API_LISTEN='not-an-address'"):
        api_container.check({**environ, "VIRTAINER_API_LISTEN": "not-an-address"}, "vm")
    assert api_container.check({"VIRTAINER_API": "0"}, "vm") is None
