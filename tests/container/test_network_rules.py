"""Network control in the real container, with the tiny guest: port rules (TCP, UDP, what is not
forwarded, the container's own API port), guest-to-outside forwards, isolation, the guest LAN and
MAC, the MAC's stability across containers and copies, and user-mode networking without NET_ADMIN.

The tiny guest answers on the ports its kernel command line names (`guestlisten=tcp:80,udp:53`)
and, once its network is up, connects once to each `guestcheck=HOST:PORT`, printing
`GUEST-CHECK HOST:PORT ok <reply>` or `fail` on its console (mirrored into `docker logs`). The
"outside" is a listener this test runs on the Docker bridge's gateway (the host's side).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.container.conftest import new_volume, tiny_options
from tests.container.docker import NETWORK_CAPS, Container, docker, docker_host_address, start
from tests.container.tiny import TINY_BANNER, banner
from tests.guests import TINY_CMDLINE, TinyGuest
from tests.waiting import wait_until
from virtainer.orchestration import needs

pytestmark = pytest.mark.container

API_PORT = needs.API_PORT
BOOT_S = 120
API_FIRST_ANSWER_S = 60  # the lazy API loads FastAPI on its first connection


@dataclass
class OutsideListener:
    """A TCP listener outside the container: answers each connection with its token and records
    who connected (peer address) and what they sent."""

    address: str
    token: str = field(default_factory=lambda: "OUTSIDE-" + uuid.uuid4().hex[:8])
    peers: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.create_server((self.address, 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                connection, (peer, _port) = self.server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    data = connection.recv(100)
                    connection.sendall(self.token.encode() + b"\n")
                except OSError:
                    data = b""
                self.peers.append((peer, data))

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def gateway() -> str:
    """The Docker bridge's gateway: the host's address as containers see it."""
    return docker_host_address()


@pytest.fixture
def outside(gateway: str) -> Iterator[OutsideListener]:
    listener = OutsideListener(gateway)
    yield listener
    listener.close()


def cmdline(*, listen: str = "", check: str = "") -> str:
    extra = (f" guestlisten={listen}" if listen else "") + (f" guestcheck={check}" if check else "")
    return TINY_CMDLINE + extra


def boot(image: str, tiny: TinyGuest, volume: Path, prefix: str, *, caps: tuple[str, ...] = NETWORK_CAPS,
         **env: str) -> Container:  # fmt: skip
    container = start(image, prefix, caps=caps, **tiny_options(tiny, volume, **env))  # type: ignore[arg-type]
    container.wait_log(r"GUEST-READY", timeout_s=BOOT_S)
    return container


def guest_line(container: Container, marker: str) -> str:
    match = re.search(rf"^{re.escape(marker)}(.*?)\r?$", container.logs(), re.MULTILINE)
    assert match, f"no {marker} line in the guest's console:\n{container.logs()[-3000:]}"
    return match.group(1).strip()


def tcp_reply(address: str, port: int, send: bytes = b"", *, timeout_s: float = 3) -> bytes:
    """What a TCP listener says first; b"" when the connection is refused or silent."""
    try:
        with socket.create_connection((address, port), timeout=3) as connection:
            connection.settimeout(timeout_s)
            if send:
                connection.sendall(send)
            return connection.recv(64)
    except OSError:
        return b""


def api_reply(address: str) -> bytes:
    """The REST API's answer to /healthz. Its first connection waits while FastAPI loads (the API
    is lazy: seconds on a loaded machine), where a guest listener would answer at once."""
    return tcp_reply(address, API_PORT, b"GET /healthz HTTP/1.0\r\n\r\n", timeout_s=API_FIRST_ANSWER_S)


def udp_reply(address: str, port: int, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        try:
            sock.sendto(payload, (address, port))
            return sock.recvfrom(256)[0]
        except OSError:
            return b""


def virtainer_rules(container: Container) -> list[str]:
    done = container.exec("iptables-save")
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if "VIRTAINER" in line and not line.startswith(":")]


# ---------------------------------------------------------------------------------------------


def test_explicit_rules_forward_only_their_ports_and_survive_a_restart(
    generic_image: str, tiny: TinyGuest, volume: Path, outside: OutsideListener
) -> None:
    """VIRTAINER_PORTS: a TCP and a UDP rule reach the guest's listeners; a port the guest
    listens on but no rule names is not reachable; the API port stays the controller's. Also:
    VM_GUEST_LAN and VM_MAC are what the guest sees, and a guest forward reaches the outside
    listener. `docker restart` installs the same rules once more, not twice."""
    container = boot(
        generic_image, tiny, volume, "ports",
        VIRTAINER_CMDLINE=cmdline(listen="tcp:80,udp:53,tcp:8470", check=f"10.99.0.1:80,192.168.199.1:{API_PORT}"),
        VIRTAINER_PORTS="tcp:8080:80 udp:5353:53",
        VM_GUEST_LAN="192.168.199.0/24",
        VM_MAC="52:54:00:ab:cd:ef",
        VIRTAINER_GUEST_FORWARDS=f"tcp:10.99.0.1:80:{outside.endpoint}",
    )  # fmt: skip
    try:
        address = container.ip
        assert guest_line(container, "GUEST-MAC:") == "52:54:00:ab:cd:ef"
        assert guest_line(container, "GUEST-NET:").startswith("inet 192.168.199.2/24")
        assert wait_until(lambda: tcp_reply(address, 8080), 30, "tcp:8080 -> guest:80") == b"TINY-TCP-80\n"
        assert wait_until(lambda: udp_reply(address, 5353, b"ping"), 30, "udp:5353 -> guest:53") == b"TINY-UDP-53 ping"
        # the guest listens on 22 and 80 too, but no rule forwards them
        assert tcp_reply(address, 22) == b"" and tcp_reply(address, 80) == b""
        # the guest listens on 8470 as well: the port stays the REST API's
        assert api_reply(address).startswith(b"HTTP/1.1 200")
        # guest -> 10.99.0.1:80 is carried to the outside listener, masqueraded as the container
        assert guest_line(container, "GUEST-CHECK 10.99.0.1:80") == f"ok {outside.token}"
        assert (address, b"GUEST-SAYS-HI\n") in outside.peers
        # even without isolation the guest never reaches its container's API (at the LAN's gateway)
        assert guest_line(container, f"GUEST-CHECK 192.168.199.1:{API_PORT}") == "fail"
        logs = container.logs()
        assert "ports to the guest: tcp:8080->80, udp:5353->53" in logs
        assert "guest LAN 192.168.199.0/24, guest address 192.168.199.2, MAC 52:54:00:ab:cd:ef" in logs

        rules = virtainer_rules(container)
        # 4 jumps into our chains; the forward, 2 RETURNs (the guest's own traffic, not for us),
        # one DNAT per rule; the masquerade; the guest's way to the API, closed
        assert len(rules) == 11, rules
        assert sum("--dport 8080" in rule for rule in rules) == 1
        docker("restart", "-t", "30", container.name, timeout=120)
        container.wait_log(r"(?s)GUEST-READY.*GUEST-READY", timeout_s=BOOT_S)
        assert virtainer_rules(container) == rules
        assert wait_until(lambda: tcp_reply(container.ip, 8080), 30, "tcp:8080 after restart") == b"TINY-TCP-80\n"
    finally:
        container.remove()


def test_every_port_mode_keeps_the_container_ports_and_the_mac_is_stable(
    generic_image: str, tiny: TinyGuest, volume: Path
) -> None:
    """No rules: every port reaches the guest except the container's own (the API's, VNC's when the
    display is on, VIRTAINER_RESERVED_PORTS). The default MAC is recorded beside the diff: the same
    in a replacing container and for a copied diff in another volume."""
    env = {"VIRTAINER_CMDLINE": cmdline(listen=f"tcp:80,tcp:{API_PORT},tcp:5999,tcp:9100")}
    first = boot(generic_image, tiny, volume, "mac1", VM_GUEST_VNC="1", VIRTAINER_RESERVED_PORTS="9100", **env)
    try:
        address = first.ip
        assert wait_until(lambda: tcp_reply(address, 80), 30, "port 80 -> guest") == b"TINY-TCP-80\n"
        assert banner(address).startswith(TINY_BANNER)
        # the guest listens on these three too: they stay the container's
        assert api_reply(address).startswith(b"HTTP/1.1 200")
        assert tcp_reply(address, 5999).startswith(b"RFB 003.")  # QEMU's VNC server, in the container
        assert tcp_reply(address, 9100) == b""  # nothing listens there in the container
        kept = f"tcp/{API_PORT} (REST API), tcp/5999 (VNC), tcp/9100 (VIRTAINER_RESERVED_PORTS)"
        assert f"except the container's own: {kept}" in first.logs()
        mac = guest_line(first, "GUEST-MAC:")
        assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
        assert json.loads((volume / "local_image.qcow2.nic.json").read_text()) == {"mac": mac}
        first.stop(timeout_s=30)
    finally:
        first.remove()

    second = boot(generic_image, tiny, volume, "mac2", **env)
    try:
        assert guest_line(second, "GUEST-MAC:") == mac
        assert "GUEST-DISK-BOOTS=2" in second.logs()
        second.stop(timeout_s=30)
    finally:
        second.remove()

    copy = new_volume("mac-copy")
    try:
        for path in volume.iterdir():
            if path.name.startswith("local_image.qcow2") and not path.name.endswith(".lock"):
                subprocess.run(["cp", "--sparse=always", str(path), str(copy / path.name)], check=True)
        teammate = boot(generic_image, tiny, copy, "mac3", **env)
        try:
            assert guest_line(teammate, "GUEST-MAC:") == mac
            assert "GUEST-DISK-BOOTS=3" in teammate.logs()
        finally:
            teammate.remove()
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_isolated_guest_reaches_only_its_forwards_and_still_takes_inbound(
    generic_image: str, tiny: TinyGuest, volume: Path, outside: OutsideListener
) -> None:
    """VM_GUEST_RESTRICT=1 (SupraVM's names throughout): the guest reaches neither the container
    (its API at the LAN's gateway) nor the outside listener directly, but does through its
    forward; an inbound redirect still works."""
    container = boot(
        generic_image, tiny, volume, "restrict",
        VIRTAINER_CMDLINE=cmdline(check=f"{outside.endpoint},192.168.199.1:{API_PORT},10.99.0.1:80"),
        VM_GUEST_RESTRICT="1",
        VM_GUEST_LAN="192.168.199.0/24",
        VM_TCP_PORTS='("0.0.0.0:22:2222")',
        VM_GUEST_TCP_FWDS=f'("10.99.0.1:80:{outside.endpoint}")',
    )  # fmt: skip
    try:
        assert guest_line(container, f"GUEST-CHECK {outside.endpoint}") == "fail"
        assert guest_line(container, f"GUEST-CHECK 192.168.199.1:{API_PORT}") == "fail"
        assert guest_line(container, "GUEST-CHECK 10.99.0.1:80") == f"ok {outside.token}"
        assert [data for _peer, data in outside.peers] == [b"GUEST-SAYS-HI\n"]  # the forward only
        address = container.ip
        assert wait_until(lambda: banner(address, 2222), 30, "inbound 2222 -> guest:22").startswith(TINY_BANNER)
        assert "guest isolated" in container.logs()
    finally:
        container.remove()


def test_without_net_admin_user_mode_networking_carries_traffic(
    generic_image: str, tiny: TinyGuest, volume: Path, outside: OutsideListener
) -> None:
    """Plain `docker run` (no capability): QEMU's user-mode networking, said in the log; the guest
    reaches the outside listener; TCP and UDP redirects reach the guest; its LAN is the same kind
    of private subnet with the guest at .2. The guest's way to the REST API (QEMU connects from
    inside the container, for 10.0.2.2-style host addresses) is refused before anything is read."""
    api_via_host = f"192.168.196.1:{API_PORT}"  # the LAN's gateway: QEMU's host address
    container = boot(
        generic_image, tiny, volume, "usermode", caps=(),
        VIRTAINER_CMDLINE=cmdline(listen="udp:53", check=f"{outside.endpoint},{api_via_host}"),
        VIRTAINER_PORTS="tcp:2222:22 udp:5353:53", VM_GUEST_LAN="192.168.196.0/24",
    )  # fmt: skip
    try:
        logs = container.logs()
        assert "no NET_ADMIN capability: the VM uses QEMU's user-mode networking" in logs
        assert "ports to the guest: tcp:2222->22, udp:5353->53" in logs
        assert guest_line(container, f"GUEST-CHECK {outside.endpoint}") == f"ok {outside.token}"
        assert outside.peers and outside.peers[0][0] == container.ip
        assert re.match(r"inet \d+\.\d+\.\d+\.2/24", guest_line(container, "GUEST-NET:"))
        address = container.ip
        assert wait_until(lambda: banner(address, 2222), 30, "tcp:2222 -> guest:22").startswith(TINY_BANNER)
        assert wait_until(lambda: udp_reply(address, 5353, b"hi"), 30, "udp:5353 -> guest:53") == b"TINY-UDP-53 hi"
        assert tcp_reply(address, 22) == b""  # not forwarded
        assert guest_line(container, f"GUEST-CHECK {api_via_host}").startswith("ok HTTP/1.1 403")
        assert api_reply(address).startswith(b"HTTP/1.1 200")
    finally:
        container.remove()


def test_without_net_admin_and_without_rules_ssh_is_forwarded_and_said(
    generic_image: str, tiny: TinyGuest, volume: Path
) -> None:
    """User-mode networking cannot forward every port: without rules it forwards tcp:22 and says so."""
    container = boot(generic_image, tiny, volume, "usermode22", caps=())
    try:
        assert "no port rules: forwarding tcp:22 only" in container.logs()
        address = container.ip
        assert wait_until(lambda: banner(address), 30, "tcp:22 -> guest:22").startswith(TINY_BANNER)
    finally:
        container.remove()


def test_the_guest_reaches_neither_the_api_nor_vnc_of_its_container_unless_opened(
    generic_image: str, tiny: TinyGuest, volume: Path
) -> None:
    """By default the guest's connections to the container's REST API and VNC ports are refused
    (at the gateway address as at any other of the container's); clients outside still reach
    both. VIRTAINER_GUEST_CONTROL_ACCESS=1 opens them to the guest."""
    checks = f"192.168.197.1:{API_PORT},192.168.197.1:5999"
    env = {"VIRTAINER_CMDLINE": cmdline(check=checks), "VM_GUEST_LAN": "192.168.197.0/24", "VM_GUEST_VNC": "1"}
    closed = boot(generic_image, tiny, volume, "guarded", **env)
    try:
        assert guest_line(closed, f"GUEST-CHECK 192.168.197.1:{API_PORT}") == "fail"
        assert guest_line(closed, "GUEST-CHECK 192.168.197.1:5999") == "fail"
        assert api_reply(closed.ip).startswith(b"HTTP/1.1 200")
        assert tcp_reply(closed.ip, 5999).startswith(b"RFB 003.")  # from outside: as before
        assert "the guest cannot reach tcp/8470 (REST API), tcp/5999 (VNC)" in closed.logs()
    finally:
        closed.remove()
    opened = boot(generic_image, tiny, volume, "opened", VIRTAINER_GUEST_CONTROL_ACCESS="1", **env)
    try:
        assert guest_line(opened, f"GUEST-CHECK 192.168.197.1:{API_PORT}").startswith("ok HTTP/1.1 ")
        assert guest_line(opened, "GUEST-CHECK 192.168.197.1:5999").startswith("ok RFB 003.")
    finally:
        opened.remove()
