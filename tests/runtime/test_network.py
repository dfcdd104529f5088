"""Container-name DNS on a user-defined network: Docker's embedded resolver (127.0.0.11, in the
container's network namespace) answers the VM's queries (UDP and TCP), carried by the guest init and
the launcher; other names go to the container's --dns servers as with runc; several networks
attached at create give the VM their interfaces, as runc does."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import struct
import uuid
from collections.abc import Iterator

import pytest

from tests.container.docker import docker, docker_host_address
from tests.runtime.common import VM_TIMEOUT_S, removed_after, run, same_as_runc, unique
from tests.runtime.tiny_dns import tiny_dns
from tests.waiting import wait_until

pytestmark = pytest.mark.runtime
SERVE = "mkdir /www; echo hello-from-{name} > /www/index.html; exec httpd -f -p 80 -h /www"
MADE_UP = {"made-up.virtainer.test": "192.0.2.77"}  # a name only the test's own DNS server knows
# what the container's resolver shows and answers: the made-up name, an unknown one (NXDOMAIN)
LOOKUPS = "; ".join(
    ["cat /etc/resolv.conf"] + [f"nslookup -type=a {name}.virtainer.test; echo $?" for name in ("made-up", "nope")]
)  # A queries only: busybox prints A and AAAA answers in the order they come


def dns_options(server: str) -> tuple[str, ...]:
    return ("--dns", server, "--dns-search", "virtainer.test", "--dns-option", "ndots:2")


@contextlib.contextmanager
def user_network(ipv6: bool = False) -> Iterator[str]:
    """A user-defined network; with ipv6, also a unique local IPv6 /64 (RFC 4193: fd + 40 random bits)."""
    name = unique("net")
    random = uuid.uuid4().hex
    subnet = ["--ipv6", "--subnet", f"fd{random[:2]}:{random[2:6]}:{random[6:10]}::/64"] if ipv6 else []
    docker("network", "create", *subnet, name)
    try:
        yield name
    finally:
        docker("network", "rm", name, check=False)


def test_two_runtime_containers_reach_each_other_by_name_and_over_ipv6(runtime: str, images: dict[str, str]) -> None:
    """On a user network with IPv6 too: the server VM has Docker's IPv6 address and runc's IPv6
    routes, and serves over IPv6 to a runc container."""
    with (
        user_network(ipv6=True) as network, removed_after(unique("server")) as server,
        removed_after(unique("server-runc")) as reference,
    ):  # fmt: skip
        for name, engine in ((server, [f"--runtime={runtime}"]), (reference, [])):
            docker("run", "-d", *engine, "--network", network, "--name", name, images["busybox"],
                   "sh", "-c", SERVE.format(name=name))  # fmt: skip

        def serving() -> bool:
            done = docker("exec", server, "wget", "-qO-", "http://127.0.0.1/", check=False, timeout=VM_TIMEOUT_S)
            return done.returncode == 0

        wait_until(serving, VM_TIMEOUT_S, "the server VM's httpd")
        script = f"grep -c '^nameserver 127.0.0.11$' /etc/resolv.conf; wget -qO- http://{server}/"
        done = run("--network", network, images["busybox"], "sh", "-c", script, runtime=runtime)
        assert (done.stdout, done.returncode) == (f"1\nhello-from-{server}\n", 0), done.stderr

        vm_addresses, vm_routes = addresses_and_routes(server, family="6")
        runc_addresses, runc_routes = addresses_and_routes(reference, family="6")
        inspect = "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}/{{.GlobalIPv6PrefixLen}}{{end}}"
        assigned = docker("inspect", "-f", inspect, server).stdout.strip()
        assert {address for nic, address in vm_addresses if nic != "lo"} == {assigned}  # Docker's address
        assert by_network(vm_addresses) == by_network(runc_addresses)  # lo's ::1, eth0's on the subnet
        assert vm_routes == runc_routes, (vm_routes, runc_routes)  # the subnet's, multicast, the default
        assert [route for route in vm_routes if route[0] == "default" and route[1]], vm_routes  # via the gateway
        address = assigned.split("/")[0]
        done = run("--network", network, images["busybox"], "wget", "-qO-", f"http://[{address}]/")
        assert (done.stdout, done.returncode) == (f"hello-from-{server}\n", 0), done.stderr


def test_dns_search_and_options_as_with_runc_on_a_user_network_and_the_default_bridge(
    runtime: str, images: dict[str, str]
) -> None:
    """--dns on a user network: Docker's resolver answers container names and forwards the others
    to the container's --dns servers (from the container's address, which the VM has); on the
    default bridge resolv.conf names the servers themselves. The server is the test's own, on its
    network's bridge address (the host's, which both networks reach)."""
    with user_network() as network:
        address = docker_host_address(network)
        with tiny_dns(address, MADE_UP) as server:
            for attached in (network, "bridge"):
                done = same_as_runc(runtime, "--network", attached, *dns_options(address), images["busybox"],
                                    "sh", "-c", LOOKUPS)  # fmt: skip
                assert "search virtainer.test\n" in done.stdout and "options ndots:2\n" in done.stdout
                assert "Address: 192.0.2.77\n" in done.stdout and "NXDOMAIN" in done.stdout, done.stdout
                assert re.findall(r"^\d+$", done.stdout, re.MULTILINE) == ["0", "1"], done.stdout  # nslookup's
        assert server.clients, "the test's DNS server was never asked"


def dns_query_over_tcp(name: str) -> bytes:
    """A DNS query for NAME's A record, as sent over TCP (RFC 1035 4.2.2: a 2-byte length first)."""
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    message = struct.pack(">HHHHHH", 0x5EED, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(message)) + message


def shell_bytes(data: bytes) -> str:
    return "".join(f"\\{byte:03o}" for byte in data)  # printf's octal escapes


def addresses_and_routes(name: str, family: str = "4") -> tuple[set[tuple[str, str]], set[tuple[str, ...]]]:
    """(interface, address/prefix) of IPv4 (or 6), and its routes as (destination, via, device);
    link-local ones left out (each side's kernel makes them from the MAC, the VM's are the same)."""
    script = f"ip -o -{family} addr; echo --; ip -{family} route"
    addrs_text, routes_text = docker("exec", name, "sh", "-c", script, timeout=VM_TIMEOUT_S).stdout.split("--\n")
    addresses = {(line.split()[1], line.split()[3]) for line in addrs_text.splitlines() if " fe80:" not in line}
    routes = set()
    for line in routes_text.splitlines():
        if line.startswith("fe80:"):
            continue
        words = line.split()
        via = words[words.index("via") + 1] if "via" in words else ""
        routes.add((words[0], via, words[words.index("dev") + 1]))
    return addresses, routes


def by_network(addresses: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(nic, str(ipaddress.ip_interface(address).network)) for nic, address in addresses}


def test_two_networks_attached_at_create_as_with_runc_and_dns_over_tcp(runtime: str, images: dict[str, str]) -> None:
    """docker create --network A, docker network connect B, docker start (Docker 20.10 takes one
    --network at run): the VM has eth0 on A and eth1 on B with Docker's addresses and routes."""
    with (
        user_network() as first, user_network() as second, removed_after(unique("peer")) as peer,
        removed_after(unique("multi-vm")) as vm, removed_after(unique("multi-runc")) as reference,
    ):  # fmt: skip
        docker("run", "-d", "--network", second, "--name", peer, images["busybox"], "sleep", "600")
        for name, engine in ((vm, [f"--runtime={runtime}"]), (reference, [])):
            docker("create", *engine, "--network", first, "--name", name, images["busybox"], "sleep", "600")
            docker("network", "connect", second, name)
            docker("start", name)
        wait_until(lambda: docker("exec", vm, "true", check=False, timeout=VM_TIMEOUT_S).returncode == 0,
                   VM_TIMEOUT_S, "docker exec to answer in the VM")  # fmt: skip

        vm_addresses, vm_routes = addresses_and_routes(vm)
        runc_addresses, runc_routes = addresses_and_routes(reference)
        inspect = "{{range $n, $e := .NetworkSettings.Networks}}{{$e.IPAddress}}/{{$e.IPPrefixLen}} {{end}}"
        assigned = set(docker("inspect", "-f", inspect, vm).stdout.split())
        assert {address for nic, address in vm_addresses if nic != "lo"} == assigned  # Docker's addresses

        assert by_network(vm_addresses) == by_network(runc_addresses)  # eth0 on A, eth1 on B, lo
        host_link = {route for route in vm_routes if route[0].startswith("169.254.")}  # the relays' way out
        assert vm_routes - host_link == runc_routes  # the default route via A's gateway, both subnets

        peer_ip = docker("inspect", "-f", inspect, peer).stdout.split()[0].split("/")[0]
        query = shell_bytes(dns_query_over_tcp(peer))
        script = f"printf '{query}' | nc -w 5 127.0.0.11 53 | od -An -v -tx1"
        answers = {}
        for name in (vm, reference):
            done = docker("exec", name, "sh", "-c", script, timeout=VM_TIMEOUT_S, check=False)
            answers[name] = "".join(done.stdout.split())
        wanted = "".join(f"{int(part):02x}" for part in peer_ip.split("."))
        assert wanted in answers[reference], answers  # runc: the peer's address in the TCP answer
        assert re.sub("^....", "", answers[vm]) == re.sub("^....", "", answers[reference])  # the same answer
        # an external name: the relay gets what Docker's resolver forwards, as runc does
        lookups = [docker("exec", name, "nslookup", "deb.debian.org", timeout=VM_TIMEOUT_S, check=False)
                   for name in (vm, reference)]  # fmt: skip
        assert lookups[0].returncode == lookups[1].returncode, lookups
        assert ("Address" in lookups[0].stdout.split("deb.debian.org")[-1]) == (
            "Address" in lookups[1].stdout.split("deb.debian.org")[-1]
        ), lookups
