"""Time to SSH against the peers, side by side: bare QEMU, testcloud, virt-lightning, `virtainer up`.

Every peer boots the same base image (each through its own fresh overlay) with the same CPUs and
memory under TCG, and is timed by the same external poller: the first `ssh … cat /proc/uptime`
that succeeds, once a second. Rounds are interleaved and rotated (round r starts with peer r), so
machine noise falls on all of them. For every run it records:

- to SSH (wall), and command -> QEMU process started / domain running;
- CPU seconds: QEMU's at first login, the controller's (the command's whole process tree, from
  wait4; in a container every process but QEMU), libvirtd's delta (a shared daemon: indicative).
  CPU seconds are far less load-sensitive than wall time on a shared machine;
- the guest's own timeline from its journal (read over SSH after first login) and /proc/uptime:
  firmware + boot loader (host time to the kernel's start), systemd, cloud-init stages, DHCP,
  sshd, the guest agent, the first accepted login; the serial log's markers where a peer keeps one;
- what the peer's live domain looks like (machine type, disk cache, seed device, devices).

Peers:
  qemu-user        bare qemu-system-x86_64, user-mode network (hostfwd to 127.0.0.1)
  qemu-bridge      bare qemu-system-x86_64 on libvirt's `default` bridge (same DHCP/NAT as libvirt's)
  qemu-bridge-agent  the same with a guest agent port (the guest then starts qemu-guest-agent)
  qemu-bridge-cgroup the same bridge, QEMU placed in libvirt's `machine` CPU cgroup: libvirt puts
                   each domain there, where all of a VM's threads weigh as much as one process
                   at the top level; bare QEMU's threads each weigh as much (cgroup v1 hosts)
  virtainer        `virtainer up`, libvirt `default` network
  virtainer-unsafe `virtainer up --disk-cache unsafe` (throwaway VMs; the default honours flushes)
  virtainer-q35    `virtainer up --machine q35`
  virtainer-baseline `virtainer up` of another checkout (--baseline DIR: its .venv), for old vs new
  testcloud        testcloud 0.12 (PyPI), libvirt `default` network
  virt-lightning   virt-lightning 2.5 (PyPI), its own libvirt network (static IP from its meta-data)
  container        `docker run virtainer/debian` (the container path; --container adds it)

testcloud and virt-lightning are installed from PyPI into a venv under the cache directory
($VIRTAINER_BENCH_CACHE, default /var/cache/virtainer-bench). Their KVM detection is kept off
(a driver script wraps them): /dev/kvm exists here but cannot run guests. Each gets the test image
where it looks for images (testcloud's backing store, virt-lightning's `upstream` pool folder) and,
where it takes one, the same user-data.

    sudo .venv/bin/python benchmarks/peers.py [--rounds 5] [--peers qemu-bridge,virtainer,testcloud]
                                              [--container] [--json FILE] [--keep]

The controller alone, no SSH wait (`up --wait-for running`: command -> domain running and the
command's CPU to there, a few seconds a round), this checkout against another one:

    sudo .venv/bin/python benchmarks/peers.py --until-running --rounds 10 \
        --peers virtainer,virtainer-baseline --baseline /path/to/other/checkout
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import libvirt
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.guests import cloud_guest  # noqa: E402
from tests.ssh import SSH_OPTIONS, make_key  # noqa: E402
from virtainer.cloudinit import SeedRequest, build_seed, write_seed_iso  # noqa: E402

URI = "qemu:///system"
BRIDGE = "virbr0"
BRIDGE_CONF = Path("/etc/qemu/bridge.conf")
POLL_S = 1.0  # one probe a second for every peer: faster polling steals CPU from TCG
DEADLINE_S = 600.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOSTNAME = "bench"
USER = "debian"
TESTCLOUD_VERSION = "0.12.0"
VIRT_LIGHTNING_VERSION = "2.5.0"
VL_NETWORK = "vtbench-vl"  # virt-lightning's network of our own: no static IP lands on `default`
VL_CIDR = "192.168.223.0/24"
ALL_PEERS = ("qemu-user", "qemu-bridge", "qemu-bridge-agent", "qemu-bridge-cgroup", "virtainer", "virtainer-unsafe",
             "virtainer-q35", "virtainer-baseline", "testcloud", "virt-lightning", "container")  # fmt: skip
DEFAULT_PEERS = ("qemu-user", "qemu-bridge", "virtainer", "testcloud", "virt-lightning")

# The guest's journal, first match of each: (label, pattern). Monotonic seconds since kernel start.
JOURNAL_MARKERS = (
    ("systemd", r"systemd\[1\]: systemd \S+ running in system mode"),
    ("ci-local", r"Finished cloud-init-local\.service"),
    ("dhcp", r"DHCPv4 address|DHCPACK|bound to \d|Configured IPv4"),
    ("ci-net", r"Finished cloud-init\.service"),
    ("sshd", r"Started ssh\.service|Server listening on"),
    ("agent", r"Started qemu-guest-agent\.service"),
    ("login", r"Accepted publickey for"),
    ("ci-config", r"Finished cloud-config\.service"),
    ("ci-final", r"Finished cloud-final\.service"),
)
SERIAL_MARKERS = (("grub", b"GNU GRUB"), ("serial-kernel", b"Linux version"), ("serial-login", b"login:"))
TIMELINE = ("firmware", "systemd", "ci-local", "dhcp", "ci-net", "sshd", "agent", "login")


# ---- measurements ----------------------------------------------------------------------------


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live (or zombie) process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_start_boottime(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]) / CLK_TCK


def pid_of(command_name: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == command_name:
                    return int(entry.name)
    return None


def machine_load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__().replace("'", "")


@dataclass
class Run:
    peer: str
    round: int
    ok: bool = False
    error: str = ""
    ssh_s: float = float("nan")
    qemu_started_s: float | None = None  # command -> QEMU process exists
    running_s: float | None = None  # command -> libvirt says running (bare: QEMU's serial file opened)
    qemu_cpu_s: float | None = None  # QEMU's CPU at first login
    controller_cpu_s: float | None = None
    controller_cpu_at_running_s: float | None = None  # its start-up share (the rest is the readiness wait)
    libvirtd_cpu_s: float | None = None
    timeline: dict[str, float] = field(default_factory=dict)  # seconds since the command started
    critical_chain: str = ""  # systemd-analyze critical-chain ssh.service, in the guest
    load: str = ""


class SerialWatch(threading.Thread):
    """Notes when markers first appear in a serial log file (read incrementally, 4 times a second)."""

    def __init__(self, path: Path, started: float) -> None:
        super().__init__(daemon=True)
        self.path, self.started = path, started
        self.seen: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        data = b""
        offset = 0
        while not self.done.wait(0.25):
            with contextlib.suppress(OSError), self.path.open("rb") as stream:
                stream.seek(offset)
                chunk = stream.read()
                offset += len(chunk)
                data = data[-64:] + chunk
            for label, marker in SERIAL_MARKERS:
                if label not in self.seen and marker in data:
                    self.seen[label] = round(time.monotonic() - self.started, 2)


# ---- a boot, whoever does it ---------------------------------------------------------------


@dataclass
class Inputs:
    work: Path
    base: Path
    key: Path  # private key; .pub beside it
    user_data: bytes
    seed_iso: Path
    vcpus: int
    memory_mib: int
    cache: Path
    until_running: bool = False  # virtainer peers only: `--wait-for running`, no SSH
    baseline: Path | None = None  # the checkout virtainer-baseline runs


class Boot:
    """One started guest: how to reach it, which QEMU runs it, how to remove it."""

    name: str = ""
    domain: str | None = None  # libvirt domain name, when libvirt runs it
    process: subprocess.Popen[bytes] | None = None  # the command we timed
    serial_log: Path | None = None

    command: list[str]
    log_path: Path | None = None

    def start(self, log_dir: Path) -> None:
        """Run the command, its output to a log file (the tail of which a failure reports)."""
        self.log_path = Path(tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=log_dir)[1])
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError, AttributeError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()  # type: ignore[union-attr]
            return lines[-1][:300] if lines else ""
        return ""

    def ssh_target(self) -> tuple[str, int] | None:
        raise NotImplementedError

    def qemu_pid(self) -> int | None:
        if self.domain is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(Path(f"/run/libvirt/qemu/{self.domain}.pid").read_text())
        return None

    def reap(self, block: bool) -> float | None:
        """The command's CPU (its whole process tree, from wait4) once it exited, else None.

        Popen.poll would reap it and lose the resource usage: wait4 does both, once."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            try:
                pid, status, usage = os.wait4(self.process.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            self.process.returncode = os.waitstatus_to_exitcode(status)
            self._cpu = usage.ru_utime + usage.ru_stime
        return getattr(self, "_cpu", None)

    def failed(self) -> bool:
        """The command exited with an error status before the guest answered."""
        self.reap(block=False)
        return self.process is not None and self.process.returncode not in (None, 0)

    def controller_cpu(self, timeout_s: float = 120) -> float | None:
        """Once the command is done (killed, and then None, if it is not within timeout_s)."""
        deadline = time.monotonic() + timeout_s
        pause = threading.Event()
        while (cpu := self.reap(block=False)) is None and self.process is not None:
            if self.process.returncode is not None or time.monotonic() > deadline:
                break
            pause.wait(0.2)
        if cpu is None and self.process is not None and self.process.returncode is None:
            self.process.kill()
        return cpu

    def describe(self, conn: libvirt.virConnect) -> dict[str, str]:
        return describe_domain(conn, self.domain) if self.domain else {}

    def remove(self) -> None:
        raise NotImplementedError


def lease_address(conn: libvirt.virConnect, network: str, mac: str) -> str | None:
    with contextlib.suppress(libvirt.libvirtError):
        for lease in conn.networkLookupByName(network).DHCPLeases(mac):
            if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                return str(lease["ipaddr"])
    return None


def remove_domain(conn: libvirt.virConnect, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        domain = conn.lookupByName(name)
        with contextlib.suppress(libvirt.libvirtError):
            domain.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def remove_network(conn: libvirt.virConnect, name: str) -> None:
    """virt-lightning's network of ours (and its dnsmasq) goes when the benchmark is done."""
    with contextlib.suppress(libvirt.libvirtError):
        network = conn.networkLookupByName(name)
        with contextlib.suppress(libvirt.libvirtError):
            network.destroy()
        network.undefine()


def fresh_mac() -> str:
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in os.urandom(3))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def overlay(base: Path, path: Path) -> Path:
    path.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)], check=True)
    return path


# ---- bare QEMU -------------------------------------------------------------------------------


class BareQemu(Boot):
    def __init__(
        self, inputs: Inputs, network: str, conn: libvirt.virConnect, agent: bool = False, cgroup: Path | None = None
    ) -> None:
        self.name = f"qemu-{network}" + ("-agent" if agent else "") + ("-cgroup" if cgroup else "")
        self.agent = agent
        self.cgroup = cgroup
        self.conn, self.network, self.mac = conn, network, fresh_mac()
        self.port = free_port()
        run_dir = inputs.work / f"{self.name}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir()
        self.run_dir = run_dir
        disk = overlay(inputs.base, run_dir / "disk.qcow2")
        self.serial_log = run_dir / "serial.log"
        netdev = (
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22" if network == "user" else f"bridge,id=n0,br={BRIDGE}"
        )
        self.command = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", str(inputs.memory_mib),
            "-smp", str(inputs.vcpus), "-nodefaults", "-vga", "none", "-display", "none",
            "-drive", f"file={disk},if=virtio,format=qcow2",
            "-drive", f"file={inputs.seed_iso},media=cdrom,format=raw,readonly=on",
            "-netdev", netdev, "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
            "-device", "virtio-rng-pci", "-serial", f"file:{self.serial_log}",
        ]  # fmt: skip
        if agent:  # the guest agent's port, as libvirt gives it: the guest starts qemu-guest-agent
            self.command += [
                "-device", "virtio-serial-pci", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                "-chardev", f"socket,id=qga0,path={run_dir / 'qga.sock'},server=on,wait=off",
            ]  # fmt: skip

    def start(self, log_dir: Path) -> None:
        if self.cgroup is None:
            super().start(log_dir)
            return
        self.cgroup.mkdir()
        procs = self.cgroup / "cgroup.procs"
        # QEMU enters the cgroup before its threads exist: each thread it starts stays there
        self.log_path = Path(tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=log_dir)[1])
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: procs.write_text("0")
            )

    def ssh_target(self) -> tuple[str, int] | None:
        if self.network == "user":
            return "127.0.0.1", self.port
        address = lease_address(self.conn, "default", self.mac)
        return (address, 22) if address else None

    def qemu_pid(self) -> int | None:
        return self.process.pid if self.process else None

    def controller_cpu(self) -> float | None:
        return None  # no controller: QEMU is the command

    def failed(self) -> bool:
        return self.process is not None and self.process.poll() is not None  # QEMU exited

    def describe(self, conn: libvirt.virConnect) -> dict[str, str]:
        return {
            "machine": "pc (i440fx)", "cpu": "qemu64 (default)", "disk cache": "writeback (default)",
            "seed": "IDE cdrom", "nic": f"virtio-net, {'user-mode' if self.network == 'user' else 'bridge virbr0'}",
            "devices": "virtio-blk, virtio-net, virtio-rng, serial"
            + (", virtio-serial agent port" if self.agent else "; no agent port") + "; -nodefaults: no VGA"
            + (f"; in the CPU cgroup {self.cgroup}" if self.cgroup else ""),
        }  # fmt: skip

    def remove(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()


def machine_cgroup() -> Path:
    """A new CPU cgroup beside libvirt's domains (cgroup v1: /sys/fs/cgroup/cpu/machine)."""
    parent = Path("/sys/fs/cgroup/cpu/machine")
    if not parent.is_dir():
        raise RuntimeError(f"{parent} does not exist (not a cgroup v1 host, or libvirt made no domain yet)")
    return parent / f"vtbench-{uuid.uuid4().hex[:8]}"


# ---- virtainer up ----------------------------------------------------------------------------


class VirtainerUp(Boot):
    def __init__(self, inputs: Inputs, peer: str, conn: libvirt.virConnect) -> None:
        self.name = peer
        self.conn, self.mac = conn, fresh_mac()
        self.domain = f"vtbench-{uuid.uuid4().hex[:8]}"
        run_dir = inputs.work / self.domain
        run_dir.mkdir()
        state = run_dir / "state"
        extra = {
            "virtainer-unsafe": ["--disk-cache", "unsafe"],
            "virtainer-q35": ["--machine", "q35"],
        }.get(peer, [])
        checkout = inputs.baseline if peer == "virtainer-baseline" and inputs.baseline else ROOT
        wait_for = "running" if inputs.until_running else "running,ip,ssh"
        self.command = [
            str(checkout / ".venv/bin/virtainer"), "up", self.domain, "--image", str(inputs.base),
            "--os-variant", "debian12", "--hostname", HOSTNAME, "--ssh-keys", str(inputs.key.with_suffix(".pub")),
            "--vcpus", str(inputs.vcpus), "--memory", str(inputs.memory_mib), "--diff", str(run_dir / "disk.qcow2"),
            "--state-dir", str(state), "--mac", self.mac, "--accelerator", "tcg", "--wait-for", wait_for,
            *extra,
        ]  # fmt: skip
        self.serial_log = state / "serial.log"

    def ssh_target(self) -> tuple[str, int] | None:
        address = lease_address(self.conn, "default", self.mac)
        return (address, 22) if address else None

    def remove(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        remove_domain(self.conn, self.domain or "")


# ---- testcloud -------------------------------------------------------------------------------

# Runs testcloud's own `instance create` with its KVM detection off and our user-data.
TESTCLOUD_DRIVER = """
import os, os.path, sys
_exists = os.path.exists
os.path.exists = lambda path: False if str(path) == "/dev/kvm" else _exists(path)  # KVM off
from testcloud import cli, config
settings = config.get_config()
settings.USER_DATA = open(sys.argv[1]).read().replace("$", "$$")  # the same user-data as every peer
sys.argv = ["testcloud", *sys.argv[2:]]
cli.main()
"""


def peer_venv(cache: Path) -> Path:
    """The venv holding testcloud and virt-lightning, made on first use (each installed on its own)."""
    venv = cache / "peers-venv"
    python = venv / "bin/python"
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    libvirt_version = subprocess.run(
        ["pkg-config", "--modversion", "libvirt"], capture_output=True, text=True, check=False
    ).stdout.strip()
    for module, requirement in (("libvirt", f"libvirt-python=={libvirt_version}"),
                                ("testcloud", f"testcloud=={TESTCLOUD_VERSION}"),
                                ("virt_lightning", f"virt-lightning=={VIRT_LIGHTNING_VERSION}")):  # fmt: skip
        if subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, check=False).returncode:
            print(f"installing {requirement} into {venv}", file=sys.stderr)
            subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=False)
    return venv


def peer_available(venv: Path, module: str) -> bool:
    return subprocess.run([str(venv / "bin/python"), "-c", f"import {module}"], capture_output=True).returncode == 0


class Testcloud(Boot):
    STORE = Path("/var/lib/testcloud/backingstores")

    def __init__(self, inputs: Inputs, conn: libvirt.virConnect) -> None:
        self.name = "testcloud"
        self.conn = conn
        self.domain = f"vtbench-tc-{uuid.uuid4().hex[:6]}"
        venv = peer_venv(inputs.cache)
        driver = inputs.cache / "testcloud-driver.py"
        driver.write_text(TESTCLOUD_DRIVER)
        user_data = inputs.work / "user-data"
        user_data.write_bytes(inputs.user_data)
        image = self._image_in_store(inputs)
        self.command = [
            str(venv / "bin/python"), str(driver), str(user_data), "create", "--name", self.domain,
            "--ram", str(inputs.memory_mib), "--vcpus", str(inputs.vcpus),
            "--timeout", str(int(DEADLINE_S)), f"file://{image}",
        ]  # fmt: skip
        self.remove_command = [str(venv / "bin/python"), str(driver), str(user_data), "remove", "--force", self.domain]
        self.serial_log = Path(f"/var/lib/testcloud/instances/{self.domain}/console.log")

    def _image_in_store(self, inputs: Inputs) -> Path:
        """The test image where testcloud looks (its backing store), copied once per content."""
        name = f"vtbench-{inputs.base.parent.name}.qcow2"
        for folder in (self.STORE, self.STORE.with_name("instances")):  # what its package install makes
            folder.mkdir(parents=True, exist_ok=True)
        stored = self.STORE / name
        if not stored.exists():
            shutil.copyfile(inputs.base, stored.with_suffix(".tmp"))
            stored.with_suffix(".tmp").rename(stored)
        return stored

    def ssh_target(self) -> tuple[str, int] | None:
        """testcloud's CLI picks its own MAC (it sets --mac_address after making the domain)."""
        with contextlib.suppress(libvirt.libvirtError):
            xml = etree.fromstring(self.conn.lookupByName(self.domain).XMLDesc(0).encode())
            mac = xml.find("./devices/interface/mac")
            address = lease_address(self.conn, "default", mac.get("address")) if mac is not None else None
            return (address, 22) if address else None
        return None

    def remove(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        subprocess.run(self.remove_command, capture_output=True, check=False, timeout=120)
        remove_domain(self.conn, self.domain or "")
        shutil.rmtree(f"/var/lib/testcloud/instances/{self.domain}", ignore_errors=True)


# ---- virt-lightning --------------------------------------------------------------------------

# Runs virt-lightning's `start` through its API with its KVM detection off, on a network of ours.
VIRT_LIGHTNING_DRIVER = """
import json, sys
import virt_lightning.api as api
import virt_lightning.configuration as configuration
import virt_lightning.virt_lightning as vl
vl.LibvirtHypervisor.domain_type = property(lambda self: "qemu")  # KVM off: /dev/kvm cannot run guests
options = json.loads(sys.argv[1])
config = configuration.Configuration()
for key, value in options["config"].items():
    config.data["main"][key] = value
api.up([options["host"]], config)  # `up`, not `start`: only it passes metadata_format on
"""


class VirtLightning(Boot):
    def __init__(self, inputs: Inputs, conn: libvirt.virConnect) -> None:
        self.name = "virt-lightning"
        self.conn = conn
        self.domain = f"vtbench-vl-{uuid.uuid4().hex[:6]}"
        venv = peer_venv(inputs.cache)
        driver = inputs.cache / "virt-lightning-driver.py"
        driver.write_text(VIRT_LIGHTNING_DRIVER)
        distro = self._image_in_pool(inputs)
        options = {
            "config": {"network_name": VL_NETWORK, "network_cidr": VL_CIDR, "storage_pool": "virt-lightning",
                       "ssh_key_file": str(inputs.key.with_suffix(".pub")), "network_auto_clean_up": "false"},
            "host": {"name": self.domain, "distro": distro, "memory": inputs.memory_mib, "vcpus": inputs.vcpus,
                     "metadata_format": {"provider": "nocloud"}},  # the image reads NoCloud, not config-2
        }  # fmt: skip
        self.command = [str(venv / "bin/python"), str(driver), json.dumps(options)]

    @staticmethod
    def _image_in_pool(inputs: Inputs) -> str:
        """The image where virt-lightning looks: <pool>/upstream/<distro>.qcow2 and its .yaml."""
        distro = f"vtbench-{inputs.base.parent.name}"
        upstream = Path("/var/lib/virt-lightning/pool/upstream")
        upstream.mkdir(parents=True, exist_ok=True)
        stored = upstream / f"{distro}.qcow2"
        if not stored.exists():
            shutil.copyfile(inputs.base, stored.with_suffix(".tmp"))
            stored.with_suffix(".tmp").rename(stored)
        (upstream / f"{distro}.yaml").write_text(f"username: {USER}\npython_interpreter: /usr/bin/python3\n")
        return distro

    def ssh_target(self) -> tuple[str, int] | None:
        with contextlib.suppress(libvirt.libvirtError):  # virt-lightning records its static IP there
            text = self.conn.lookupByName(self.domain).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "ipv4")
            match = re.search(r"name=.(\d+\.\d+\.\d+\.\d+)", text)
            if match:
                return match.group(1), 22
        return None

    def remove(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        remove_domain(self.conn, self.domain or "")
        with contextlib.suppress(libvirt.libvirtError):
            pool = self.conn.storagePoolLookupByName("virt-lightning")
            pool.refresh()
            for volume in pool.listAllVolumes():
                if volume.name().startswith(self.domain or "-"):
                    volume.delete()


# ---- the container path ----------------------------------------------------------------------


class ContainerBoot(Boot):
    """`docker run virtainer/debian` with the key mounted: SSH to the container's address."""

    def __init__(self, inputs: Inputs, image: str) -> None:
        from tests.container.docker import run_args

        self.name = "container"
        self.container = f"vtbench-ct-{uuid.uuid4().hex[:6]}"
        volume = inputs.work / self.container
        volume.mkdir()
        os.chmod(volume, 0o755)
        key = f"{inputs.key.with_suffix('.pub')}:/tmp/id_rsa.pub:ro"
        env = {"CPU": str(inputs.vcpus), "RAM": str(inputs.memory_mib), "VIRTAINER_HOSTNAME": HOSTNAME}
        args = run_args(image, caps=("NET_ADMIN", "SYS_ADMIN"), volumes=[key, f"{volume}:/mounted"], env=env)
        self.command = ["docker", "run", "-d", "--name", self.container, *args]
        self.address: str | None = None

    def _top(self) -> list[tuple[int, str]]:
        done = subprocess.run(["docker", "top", self.container, "-eo", "pid,comm"], capture_output=True, text=True,
                              check=False)  # fmt: skip
        rows = []
        for line in done.stdout.splitlines()[1:]:
            pid, _, command = line.strip().partition(" ")
            rows.append((int(pid), command.strip()))
        return rows

    def ssh_target(self) -> tuple[str, int] | None:
        if self.address is None:
            done = subprocess.run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", self.container],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            self.address = done.stdout.strip() or None
        return (self.address, 22) if self.address else None

    def qemu_pid(self) -> int | None:
        return next((pid for pid, command in self._top() if command.startswith("qemu-system")), None)

    def controller_cpu(self) -> float | None:
        """Every process in the container but QEMU (controller, libvirtd, virtlogd, API)."""
        super().controller_cpu()  # `docker run -d` is done
        return sum(proc_cpu_s(pid) or 0 for pid, command in self._top() if not command.startswith("qemu-system"))

    def describe(self, conn: libvirt.virConnect) -> dict[str, str]:
        done = subprocess.run(["docker", "exec", self.container, "virsh", "-c", URI, "dumpxml", "vm"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        return describe_xml(done.stdout) if done.returncode == 0 else {}

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", "-v", self.container], capture_output=True, check=False)


# ---- what a domain does differently ----------------------------------------------------------


def describe_domain(conn: libvirt.virConnect, name: str) -> dict[str, str]:
    try:
        return describe_xml(conn.lookupByName(name).XMLDesc(0))
    except libvirt.libvirtError:
        return {}


def describe_xml(xml: str) -> dict[str, str]:
    root = etree.fromstring(xml.encode())
    disks = root.findall("./devices/disk")
    system = next((disk for disk in disks if disk.get("device") == "disk"), None)
    seed = next((disk for disk in disks if disk.get("device") == "cdrom"), None)
    if seed is None and len(disks) > 1:
        seed = disks[-1]
    cpu = root.find("./cpu")
    nic = root.find("./devices/interface")
    kinds = []
    for device in root.find("./devices") if root.find("./devices") is not None else []:
        if not isinstance(device.tag, str) or device.tag in ("emulator", "disk", "interface", "serial", "console"):
            continue
        detail = device.get("type") or device.get("model") or ""
        if device.tag == "channel":
            detail = (device.find("target").get("name") or "") if device.find("target") is not None else ""
        if device.tag == "controller" and device.get("model"):
            detail = f"{device.get('type')}:{device.get('model')}"
        kinds.append(f"{device.tag}({detail})" if detail else device.tag)

    def driver_cache(disk: etree._Element | None) -> str:
        driver = disk.find("driver") if disk is not None else None
        return (driver.get("cache") if driver is not None else None) or "default (writeback)"

    def target(disk: etree._Element | None) -> str:
        if disk is None:
            return "none"
        node = disk.find("target")
        return f"{disk.get('device')} on {node.get('bus')}" if node is not None else str(disk.get("device"))

    return {
        "machine": str(root.find("./os/type").get("machine")),
        "cpu": "default" if cpu is None else " ".join([str(cpu.get("mode")), cpu.findtext("model") or "",
                                                      *(f"-{f.get('name')}" for f in cpu.findall("feature")
                                                        if f.get("policy") == "disable")]).strip(),
        "disk cache": driver_cache(system),
        "seed": target(seed),
        "nic": f"{nic.find('model').get('type') if nic.find('model') is not None else '?'}, {nic.get('type')}"
        if nic is not None else "none",
        "devices": ", ".join(sorted(kinds)),
    }  # fmt: skip


# ---- one run ---------------------------------------------------------------------------------


def probe_uptime(key: Path, target: tuple[str, int]) -> float | None:
    """The guest's uptime via SSH, or None while login does not work yet."""
    command = ["ssh", "-i", str(key), "-p", str(target[1]), *SSH_OPTIONS, f"{USER}@{target[0]}", "cat /proc/uptime"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    with contextlib.suppress(ValueError, IndexError):
        return float(done.stdout.split()[0])
    return None


CHAIN_MARK = "---- critical chain ----"


def guest_journal(key: Path, target: tuple[str, int]) -> tuple[str, str]:
    """The guest's journal of this boot, and systemd's critical chain to sshd (after first login)."""
    remote = (f"sudo journalctl -b -o short-monotonic --no-pager -q; echo '{CHAIN_MARK}'; "
              "systemd-analyze critical-chain ssh.service --no-pager 2>&1 | tail -n +2")  # fmt: skip
    command = ["ssh", "-i", str(key), "-p", str(target[1]), *SSH_OPTIONS, f"{USER}@{target[0]}", remote]
    with contextlib.suppress(subprocess.TimeoutExpired):
        text = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False).stdout
        journal, _, chain = text.partition(CHAIN_MARK)
        return journal, chain.strip()
    return "", ""


def journal_marks(journal: str) -> dict[str, float]:
    marks: dict[str, float] = {}
    for line in journal.splitlines():
        stamp = re.match(r"\[\s*(\d+\.\d+)\]", line)
        if not stamp:
            continue
        for label, pattern in JOURNAL_MARKERS:
            if label not in marks and re.search(pattern, line):
                marks[label] = float(stamp.group(1))
    return marks


def wait_running(boot: Boot, conn: libvirt.virConnect, started: float) -> float | None:
    """Seconds until the domain runs (libvirt), or QEMU opened its serial file (bare QEMU)."""
    pause = threading.Event()
    while time.monotonic() - started < 120:
        if boot.domain is not None:
            with contextlib.suppress(libvirt.libvirtError):
                if conn.lookupByName(boot.domain).state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                    return time.monotonic() - started
        elif boot.serial_log is not None and boot.serial_log.exists():
            return time.monotonic() - started
        elif isinstance(boot, ContainerBoot):
            return None  # measured from the controller's log by container_bench.py
        if boot.failed():
            raise RuntimeError(f"{boot.name}: exit {boot.process.returncode}: {boot.log_tail()}")  # type: ignore[union-attr]
        pause.wait(0.02)
    return None


def measure(boot: Boot, inputs: Inputs, conn: libvirt.virConnect, run: Run) -> None:
    libvirtd = pid_of("libvirtd")
    libvirtd_before = proc_cpu_s(libvirtd) if libvirtd else None
    started_boot = boottime()
    started = time.monotonic()
    boot.start(inputs.work)
    watch = SerialWatch(boot.serial_log, started) if boot.serial_log else None
    if watch:
        watch.start()
    try:
        run.running_s = wait_running(boot, conn, started)
        if isinstance(boot, VirtainerUp | Testcloud | VirtLightning) and boot.process is not None:
            run.controller_cpu_at_running_s = proc_cpu_s(boot.process.pid)  # its own; it is still running
        if inputs.until_running:  # `up --wait-for running` exits there: its whole tree's CPU
            run.controller_cpu_s = boot.controller_cpu()
            run.ok = True
            return
        pause = threading.Event()
        uptime = target = None
        while uptime is None:
            if time.monotonic() - started > DEADLINE_S:
                raise TimeoutError(f"no SSH within {DEADLINE_S:.0f} s")
            if boot.failed():
                raise RuntimeError(f"{boot.name}: exit {boot.process.returncode}: {boot.log_tail()}")  # type: ignore[union-attr]
            target = boot.ssh_target()
            uptime = probe_uptime(inputs.key, target) if target else None
            if uptime is None:
                pause.wait(POLL_S)
        now = time.monotonic()
        run.ssh_s = round(now - started, 2)
        pid = boot.qemu_pid()
        run.qemu_cpu_s = proc_cpu_s(pid) if pid else None
        qemu_start = proc_start_boottime(pid) if pid else None
        run.qemu_started_s = round(qemu_start - started_boot, 2) if qemu_start else None
        kernel_at = (now - started) - uptime  # host seconds since the command when the guest kernel started
        assert target is not None
        journal, run.critical_chain = guest_journal(inputs.key, target)
        (inputs.work / f"journal-{run.peer}-{run.round}.txt").write_text(journal)  # kept with --keep
        marks = journal_marks(journal)
        run.timeline = {"firmware": round(kernel_at - (run.qemu_started_s or 0), 2)}
        run.timeline.update({label: round(kernel_at + at, 2) for label, at in marks.items()})
        if watch:
            run.timeline.update(watch.seen)
        run.controller_cpu_s = boot.controller_cpu()
        if libvirtd and libvirtd_before is not None and boot.domain:
            after = proc_cpu_s(libvirtd)
            run.libvirtd_cpu_s = round(after - libvirtd_before, 2) if after is not None else None
        run.ok = True
    finally:
        if watch:
            watch.done.set()


def make_boot(peer: str, inputs: Inputs, conn: libvirt.virConnect, container_image: str | None) -> Boot:
    if peer in ("qemu-user", "qemu-bridge", "qemu-bridge-agent", "qemu-bridge-cgroup"):
        cgroup = machine_cgroup() if peer.endswith("-cgroup") else None
        return BareQemu(inputs, peer.split("-")[1], conn, agent=peer.endswith("-agent"), cgroup=cgroup)
    if peer.startswith("virtainer"):
        return VirtainerUp(inputs, peer, conn)
    if peer == "testcloud":
        return Testcloud(inputs, conn)
    if peer == "virt-lightning":
        return VirtLightning(inputs, conn)
    if peer == "container" and container_image:
        return ContainerBoot(inputs, container_image)
    raise ValueError(f"unknown peer {peer}")


# ---- report ----------------------------------------------------------------------------------


def med(values: list[float]) -> str:
    values = [value for value in values if value is not None and value == value]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def median_of(runs: list[Run], peer: str, get: Callable[[Run], float | None]) -> float | None:
    values = [value for run in runs if run.peer == peer and run.ok and (value := get(run)) is not None]
    return statistics.median(values) if values else None


def report(runs: list[Run], peers: list[str], described: dict[str, dict[str, str]], conditions: dict[str, str]) -> str:
    lines = [f"machine: {conditions['cpus']} CPUs, load before {conditions['load_before']}, "
             f"after {conditions['load_after']}; {conditions['rounds']} rounds, TCG, "
             f"{conditions['vcpus']} vCPU, {conditions['memory']} MiB", ""]  # fmt: skip
    lines.append("| peer | to SSH s, median (range) | command -> running s | QEMU CPU s at login | controller CPU s | "
                 "libvirtd CPU s | ok |")  # fmt: skip
    lines.append("|---|---|---|---|---|---|---|")
    for peer in peers:
        mine = [run for run in runs if run.peer == peer]
        good = [run for run in mine if run.ok]
        lines.append(
            f"| {peer} | {med([r.ssh_s for r in good])} | {med([r.running_s for r in good])} | "
            f"{med([r.qemu_cpu_s for r in good])} | {med([r.controller_cpu_s for r in good])} | "
            f"{med([r.libvirtd_cpu_s for r in good])} | {len(good)}/{len(mine)} |"
        )
    lines += ["", "guest timeline, seconds since the command (median): " + ", ".join(TIMELINE), ""]
    lines.append("| peer | " + " | ".join(TIMELINE) + " |")
    lines.append("|---|" + "---|" * len(TIMELINE))
    for peer in peers:
        cells = []
        for label in TIMELINE:
            value = median_of(runs, peer, lambda r, label=label: r.timeline.get(label))
            cells.append("-" if value is None else f"{value:.1f}")
        lines.append(f"| {peer} | " + " | ".join(cells) + " |")
    lines += ["", "what each peer does (its live domain):", ""]
    keys = ("machine", "cpu", "disk cache", "seed", "nic", "devices")
    lines.append("| peer | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---|" * len(keys))
    for peer in peers:
        facts = described.get(peer, {})
        lines.append(f"| {peer} | " + " | ".join(facts.get(key, "?") for key in keys) + " |")
    failures = [run for run in runs if not run.ok]
    if failures:
        lines += ["", "failed runs:"] + [f"  round {run.round} {run.peer}: {run.error}" for run in failures]
    lines += ["", *verdicts(runs, peers, described)]
    return "\n".join(lines)


def verdicts(runs: list[Run], peers: list[str], described: dict[str, dict[str, str]]) -> list[str]:
    def ssh(peer: str) -> float | None:
        return median_of(runs, peer, lambda r: r.ssh_s) if peer in peers else None

    def verdict(goal: str, met: bool | None, detail: str) -> str:
        word = "n/a " if met is None else ("MET " if met else "MISS")
        return f"{word} {goal}: {detail}"

    ours, bare, testcloud = ssh("virtainer"), ssh("qemu-bridge"), ssh("testcloud")
    lines = []
    if ours and bare:
        lines.append(verdict("to SSH <= 1.00 x bare QEMU (same bridge)", ours <= bare, f"{ours / bare:.3f}"))
    if ours and testcloud:
        lines.append(verdict("to SSH <= 0.90 x testcloud", ours <= 0.9 * testcloud, f"{ours / testcloud:.3f}"))
    running = median_of(runs, "virtainer", lambda r: r.running_s)
    if running is not None:
        lines.append(verdict("command -> running < 0.5 s on a host", running < 0.5, f"{running:.2f} s"))
    controller = median_of(runs, "virtainer", lambda r: r.controller_cpu_s)
    if controller is not None:
        to_ssh = any(run.peer == "virtainer" and run.ssh_s == run.ssh_s for run in runs)  # NaN: --until-running
        scope = "(up)" if to_ssh else "(up to running only: the readiness wait is not in it)"
        lines.append(verdict("controller CPU during a boot < 0.3 s", controller < 0.3, f"{controller:.2f} s {scope}"))
    container_cpu = median_of(runs, "container", lambda r: r.controller_cpu_s)
    if container_cpu is not None:
        lines.append(verdict("container's CPU but QEMU's, to SSH", None, f"{container_cpu:.2f} s (controller, "
                             "libvirtd, virtlogd, API)"))  # fmt: skip
    ours_cache = described.get("virtainer", {}).get("disk cache")
    if ours_cache:
        lines.append(verdict("the diff honours guest flushes by default", "unsafe" not in ours_cache, ours_cache))
    return lines


# ---- main ------------------------------------------------------------------------------------


def compile_bytecode(checkout: Path) -> None:
    """Write virtainer's .pyc files, as an installed package (pip, the image's compileall) has
    them: with PYTHONDONTWRITEBYTECODE in the environment an editable checkout would compile
    every module again on every `virtainer up` (measured: ~0.1 s of the controller's CPU)."""
    compileall.compile_dir(str(checkout / "virtainer"), quiet=1)


def seed_inputs(work: Path, cache: Path, base: Path, vcpus: int, memory: int) -> Inputs:
    key = make_key(work)
    request = SeedRequest(hostname=HOSTNAME, default_user=USER, ssh_authorized_keys=(key.public.read_text().strip(),))
    seed = build_seed(request)
    seed_iso = work / "seed.iso"
    write_seed_iso(seed, seed_iso)
    return Inputs(work, base, key.private, seed.files["user-data"], seed_iso, vcpus, memory, cache)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peers", default=",".join(DEFAULT_PEERS), help=f"comma-separated, of {', '.join(ALL_PEERS)}")
    parser.add_argument("--container", action="store_true", help="add the container path (builds virtainer/debian)")
    parser.add_argument("--image", type=Path, help="base image (default: the project's Debian test image)")
    parser.add_argument("--vcpus", type=int, default=2)
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (serial logs)")
    parser.add_argument(
        "--until-running",
        action="store_true",
        help="virtainer peers only: stop each run when the domain runs (no SSH wait)",
    )
    parser.add_argument("--baseline", type=Path, help="the checkout (with its .venv) virtainer-baseline runs")
    args = parser.parse_args()
    peers = [peer for peer in args.peers.split(",") if peer]
    if args.container and "container" not in peers:
        peers.append("container")
    unknown = [peer for peer in peers if peer not in ALL_PEERS]
    if unknown:
        parser.error(f"--peers: unknown {', '.join(unknown)}; accepted: {', '.join(ALL_PEERS)}")
    if args.until_running and (others := [peer for peer in peers if not peer.startswith("virtainer")]):
        parser.error(f"--until-running: virtainer peers only, not {', '.join(others)}")
    if "virtainer-baseline" in peers and not (args.baseline and (args.baseline / ".venv/bin/virtainer").exists()):
        parser.error("virtainer-baseline: --baseline DIR must be a checkout with its .venv (scripts/setup-host.sh)")
    cache = Path(os.environ.get("VIRTAINER_BENCH_CACHE", "/var/cache/virtainer-bench"))
    cache.mkdir(parents=True, exist_ok=True)
    if "qemu-bridge" in peers and (not BRIDGE_CONF.exists() or f"allow {BRIDGE}" not in BRIDGE_CONF.read_text()):
        BRIDGE_CONF.parent.mkdir(parents=True, exist_ok=True)
        with BRIDGE_CONF.open("a") as stream:
            stream.write(f"allow {BRIDGE}\n")  # lets bare QEMU join libvirt's bridge via its helper
    for peer, module in (("testcloud", "testcloud"), ("virt-lightning", "virt_lightning")):
        if peer in peers and not peer_available(peer_venv(cache), module):
            print(f"{peer}: does not install here, left out", file=sys.stderr)
            peers.remove(peer)
    base = args.image or cloud_guest().base_image
    compile_bytecode(ROOT)
    if args.baseline:
        compile_bytecode(args.baseline)
    container_image = None
    if "container" in peers:
        from tests.container.docker import build_image

        container_image = build_image("debian", {"IMAGE_FILE": str(base), "OS_VARIANT": "debian12"}).tag
    work = Path(tempfile.mkdtemp(prefix="virtainer-peers-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    inputs = seed_inputs(work, cache, base, args.vcpus, args.memory)
    inputs.until_running, inputs.baseline = args.until_running, args.baseline
    libvirt.registerErrorHandler(lambda _context, _error: None, None)  # lookups of domains not yet defined
    conn = libvirt.open(URI)
    runs: list[Run] = []
    described: dict[str, dict[str, str]] = {}
    load_before = machine_load()
    try:
        for index in range(args.rounds):
            order = peers[index % len(peers) :] + peers[: index % len(peers)]
            for peer in order:
                runs.append(one_run(peer, index + 1, inputs, conn, container_image, described))
    finally:
        if "virt-lightning" in peers:
            remove_network(conn, VL_NETWORK)
        conn.close()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    conditions = {"cpus": str(os.cpu_count()), "load_before": load_before, "load_after": machine_load(),
                  "rounds": str(args.rounds), "vcpus": str(args.vcpus), "memory": str(args.memory)}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"conditions": conditions, "described": described,
                                         "runs": [asdict(run) for run in runs]}, indent=1))  # fmt: skip
    print(report(runs, peers, described, conditions))
    return 0


def one_run(
    peer: str, round_number: int, inputs: Inputs, conn: libvirt.virConnect, container_image: str | None,
    described: dict[str, dict[str, str]],
) -> Run:  # fmt: skip
    run = Run(peer, round_number, load=machine_load())
    boot = None
    try:
        boot = make_boot(peer, inputs, conn, container_image)
        measure(boot, inputs, conn, run)
        described.setdefault(peer, boot.describe(conn))
    except Exception as problem:  # noqa: BLE001 - one failed run must not lose the others
        run.error = f"{type(problem).__name__}: {problem}"
    finally:
        if boot is not None:
            boot.remove()
    cpu = f"qemu {run.qemu_cpu_s or 0:.1f} s, controller {run.controller_cpu_s or 0:.2f} s"
    status = f"ssh {run.ssh_s:6.1f} s, running {run.running_s or 0:.2f} s, {cpu}" if run.ok else run.error
    print(f"round {round_number}: {peer:16s} {status}  (load {run.load})", file=sys.stderr, flush=True)
    return run


if __name__ == "__main__":
    sys.exit(main())
