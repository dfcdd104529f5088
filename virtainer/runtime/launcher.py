"""The container's process: boots the image's root filesystem in a VM and stands in for its command.

Runs inside the container (root = the runtime tree, `tini -s` as PID 1), from the plan the runtime
wrote at create. libvirt runs embedded in this process (`qemu:///embed`, no daemon), QEMU and
virtiofsd are its children. The command's stdout and stderr arrive on their own virtio-serial ports
and go to this process's stdout and stderr, so Docker sees them as it would with runc; the control
port carries signals and window sizes in, and the exit status out (see guest/init.c).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import sys
import termios
import threading
import time
import tty
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from virtainer.accel import AcceleratorChoice, choose_accelerator
from virtainer.errors import VirtainerError
from virtainer.hypervisor import DomainState, Hypervisor
from virtainer.runtime import netsetup
from virtainer.runtime.disks import attach_disks
from virtainer.runtime.plan import (
    EMBED_ROOT,
    EXEC_SOCKET,
    GUEST_DIR,
    INITRD,
    KERNEL,
    PLAN_PATH,
    RUN_DIR,
    SHARED_CACHE,
    STATE_DIR,
    VM_ROOTFS,
    LaunchPlan,
    Process,
)
from virtainer.runtime.qemu_memory import release_guest_kernel
from virtainer.runtime.stdio import is_dev_null, terminal_maps_newlines
from virtainer.runtime.timeline import Timeline
from virtainer.runtime.vm import (
    PORT_CONTROL,
    PORT_STDERR,
    PORT_STDIN,
    PORT_STDOUT,
    PortRelay,
    VmFiles,
    domain_name,
    guest_config,
    render_vm_xml,
    write_initrd,
)

EXIT_LAUNCH_FAILED = 125  # like `docker run`'s own failures: the command never ran
FLUSH_DEADLINE_S = 5.0  # after the guest reports its exit: wait this long for the last output
STOP_DEADLINE_S = 5.0  # then this long for the guest to power off before the VM is ended
DNS_IN_FLIGHT = 16  # the guest's DNS queries answered at once; more are dropped (the guest retries)
FORWARDED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip
# libvirt embedded: no daemon, state under STATE_DIR; QEMU as root without libvirt's own
# namespaces, cgroups or labels (the container already has them)
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = []
cgroup_controllers = []
stdio_handler = "file"
"""


def log(message: str) -> None:
    sys.stderr.write(f"virtainer: {message}\n")
    sys.stderr.flush()


class Relay:
    """Bytes from one VM socket to one of our fds, counted (the flush check compares counts)."""

    def __init__(self, sock: socket.socket, fd: int) -> None:
        self.sock = sock
        self.fd = fd
        self.count = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while data := self.sock.recv(65536):
                view = memoryview(data)
                while view:
                    try:
                        written = os.write(self.fd, view)
                    except OSError:
                        written = len(view)  # nobody reads our output any more: keep counting
                    view = view[written:]
                self.count += len(data)
        except OSError:
            pass
        finally:
            self.done.set()


class Launcher:
    def __init__(self, plan: LaunchPlan) -> None:
        self.plan = plan
        state = Path(STATE_DIR)
        self.files = VmFiles(
            kernel=Path(GUEST_DIR) / KERNEL,
            initrd=state / "initrd.img",
            console_log=state / "console.log",
            socket_dir=state,
            rootfs=Path(VM_ROOTFS),
        )
        self.name = domain_name(plan.container_id)
        self.control: socket.socket | None = None
        self.control_lock = threading.Lock()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.timeline = Timeline(plan.debug)
        self.exec_clients: dict[int, socket.socket] = {}
        self.next_session = 0
        self.dns_slots = threading.BoundedSemaphore(DNS_IN_FLIGHT)

    # -- setup ---------------------------------------------------------------------------------

    def _prepare(self) -> tuple[Hypervisor, str, bool]:
        config_dir = Path(EMBED_ROOT) / "etc"  # the embedded driver reads ROOT/etc/qemu.conf
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "qemu.conf").write_text(QEMU_CONF)
        accelerator = _accelerator(self.plan.accelerator)
        self.timeline.mark("accelerator chosen")
        if self.plan.debug:
            log(f"accelerator {accelerator.kind}: {accelerator.reason}")
        disks = attach_disks(self.plan.disks, self.files.rootfs)  # first: a refusal changes nothing
        nics = netsetup.take_over_network() if self.plan.network else []
        with_stdin = self.plan.process.terminal or not is_dev_null(0)
        dns_proxy = bool(nics) and netsetup.uses_docker_dns(self.files.rootfs / "etc" / "resolv.conf")
        onlcr = terminal_maps_newlines(0) if self.plan.process.terminal else True
        relays = _relays(self.plan, dns_proxy) if nics else ()
        hostlink = netsetup.add_host_link(nics[0]) if relays else None
        if dns_proxy and hostlink:
            netsetup.forward_tcp(netsetup.DOCKER_DNS[1], netsetup.DOCKER_DNS)  # DNS over TCP
        config = guest_config(
            self.plan, with_stdin=with_stdin, nics=nics, onlcr=onlcr, dns_proxy=dns_proxy,
            disks=self.plan.disks, hostlink=hostlink, relays=relays,
        )  # fmt: skip
        write_initrd(Path(GUEST_DIR) / INITRD, config, self.files.initrd)
        xml = render_vm_xml(self.plan, self.files, accelerator, nics, disks, vnc_listen=hostlink or "0.0.0.0")
        self.timeline.mark("network, initramfs and domain XML ready")
        hypervisor = Hypervisor(f"qemu:///embed?root={EMBED_ROOT}")
        self.timeline.mark("libvirt (embedded) open")
        return hypervisor, xml, with_stdin

    def _connect(self, port: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.files.socket(port)))
        return sock

    # -- running -------------------------------------------------------------------------------

    def run(self) -> int:
        self.timeline.create(Path(RUN_DIR))
        self.timeline.mark("launcher process started", self.timeline.started)
        self.timeline.mark("launcher's imports done")
        hypervisor, xml, with_stdin = self._prepare()
        try:
            hypervisor.start_transient(xml, paused=True)
            self.timeline.mark("libvirt started virtiofsd and QEMU (paused)")
            out = Relay(self._connect(PORT_STDOUT), 1)
            err = Relay(self._connect(PORT_STDERR), 2)
            self.control = self._connect(PORT_CONTROL)
            stdin = self._connect(PORT_STDIN)
            threading.Thread(target=self._read_control, daemon=True).start()
            self._install_signal_handlers()
            saved_tty = self._raw_terminal()
            if with_stdin:
                threading.Thread(target=self._pump_stdin, args=(stdin,), daemon=True).start()
            hypervisor.resume(self.name)
            self.timeline.mark("VM resumed")
            release_guest_kernel(self.name, self.files.kernel)  # QEMU has copied it to guest RAM
            threading.Thread(target=self._serve_exec, daemon=True).start()
            if self.plan.debug:
                threading.Thread(target=_tail, args=(self.files.console_log,), daemon=True).start()
            try:
                return self._wait_for_exit(hypervisor, out, err)
            finally:
                if saved_tty is not None:
                    termios.tcsetattr(0, termios.TCSADRAIN, saved_tty)
        finally:
            with contextlib.suppress(VirtainerError):
                hypervisor.destroy(self.name)
            self.timeline.mark("domain destroyed")
            hypervisor.close()
            self.timeline.mark("libvirt closed")
            for libvirt_log in sorted(Path(EMBED_ROOT).glob("log/**/*.log")):
                self.timeline.libvirt_log(libvirt_log)

    def _wait_for_exit(self, hypervisor: Hypervisor, out: Relay, err: Relay) -> int:
        while True:
            try:
                line = self.lines.get(timeout=0.25)
            except queue.Empty:
                if hypervisor.state(self.name).active:
                    continue
                line = None
            if line is None:
                self._report_lost_vm(hypervisor.state(self.name))
                return EXIT_LAUNCH_FAILED
            words = line.split()
            if len(words) == 4 and words[0] == "exit":
                status, out_bytes, err_bytes = (int(word) for word in words[1:])
                self.timeline.mark(f"the command exited with {status}")
                self.timeline.cpu()
                deadline = time.monotonic() + FLUSH_DEADLINE_S
                while (out.count < out_bytes or err.count < err_bytes) and time.monotonic() < deadline:
                    time.sleep(0.01)
                self._send("ack")
                self.timeline.mark("output flushed, exit acknowledged")
                deadline = time.monotonic() + STOP_DEADLINE_S
                while hypervisor.state(self.name) == DomainState.RUNNING and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.timeline.mark("VM powered off")
                return status

    def _report_lost_vm(self, state: DomainState) -> None:
        log(f"the VM stopped before the command finished (domain {state}); its console said:")
        with contextlib.suppress(OSError):
            tail = self.files.console_log.read_text(errors="replace").splitlines()[-20:]
            for text in tail:
                sys.stderr.write(f"  console: {text}\n")

    def _read_control(self) -> None:
        assert self.control is not None
        buffered = b""
        try:
            while data := self.control.recv(1 << 17):
                buffered += data
                while b"\n" in buffered:
                    line, buffered = buffered.split(b"\n", 1)
                    text = line.decode(errors="replace")
                    kind, _, rest = text.partition(" ")
                    if kind in ("out", "err", "done"):
                        self._to_exec_client(kind, rest)
                    elif kind == "dns":
                        self._forward_dns(rest)
                    elif kind == "stage":
                        self.timeline.guest(rest)
                    else:
                        self.lines.put(text)
        except OSError:
            pass
        self.lines.put(None)

    # -- docker exec: clients on EXEC_SOCKET, sessions multiplexed on the control port ----------

    def _serve_exec(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(EXEC_SOCKET)
        server.bind(EXEC_SOCKET)
        os.chmod(EXEC_SOCKET, 0o600)
        server.listen(16)
        while True:
            client, _ = server.accept()
            threading.Thread(target=self._exec_session, args=(client,), daemon=True).start()

    def _exec_session(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            request = json.loads(reader.readline())
            process = Process(**request["process"])
        except (ValueError, TypeError, KeyError):
            client.close()
            return
        with self.control_lock:
            self.next_session += 1
            session = self.next_session
        self.exec_clients[session] = client
        config = guest_config(
            replace(self.plan, process=process),
            with_stdin=bool(request.get("stdin")),
            nics=[],
            onlcr=bool(request.get("onlcr", True)),
        )
        self._send(f"exec {session} {config.hex()}")
        for raw in reader:
            kind, _, rest = raw.decode(errors="replace").strip().partition(" ")
            if kind == "in":
                self._send(f"in {session} {rest}")
            elif kind == "ineof":
                self._send(f"ineof {session}")
            elif kind == "kill":
                self._send(f"kill {session} {rest}")
            elif kind == "size":
                self._send(f"execsize {session} {rest}")

    def _to_exec_client(self, kind: str, rest: str) -> None:
        session_text, _, payload = rest.partition(" ")
        client = self.exec_clients.get(int(session_text)) if session_text.isdigit() else None
        if client is None:
            return
        with contextlib.suppress(OSError):
            client.sendall(f"{kind} {payload}\n".encode())
        if kind == "done":
            self.exec_clients.pop(int(session_text), None)
            with contextlib.suppress(OSError):
                client.close()

    # -- DNS: the guest's queries for 127.0.0.11, answered by Docker's resolver in our namespace --

    def _forward_dns(self, rest: str) -> None:
        query_id, _, payload = rest.partition(" ")
        if not query_id.isdigit() or not self.dns_slots.acquire(blocking=False):
            return
        threading.Thread(target=self._answer_dns, args=(query_id, payload), daemon=True).start()

    def _answer_dns(self, query_id: str, payload: str) -> None:
        try:
            answer = netsetup.ask_docker_dns(bytes.fromhex(payload))
            self._send(f"dnsr {query_id} {answer.hex()}")
        except OSError:
            self._send(f"dnsfail {query_id}")  # a name Docker forwards: the guest asks upstream
        except ValueError:
            pass  # not a query: the guest's resolver times out, as with a lost packet
        finally:
            self.dns_slots.release()

    def _pump_stdin(self, sock: socket.socket) -> None:
        """Our stdin into the guest. Its end is a count on the control port, not a closed socket:
        QEMU drops what the guest has not read yet when the socket closes."""
        sent = 0
        try:
            while data := os.read(0, 65536):
                sock.sendall(data)
                sent += len(data)
        except OSError:
            pass
        self._send(f"stdin-eof {sent}")

    def _send(self, line: str) -> None:
        with self.control_lock, contextlib.suppress(OSError):
            assert self.control is not None
            self.control.sendall(line.encode() + b"\n")

    def _install_signal_handlers(self) -> None:
        def forward(signum: int, _frame: FrameType | None) -> None:
            self._send(f"signal {signum}")

        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, forward)
        signal.signal(signal.SIGWINCH, lambda _s, _f: self._send_window_size())

    def _send_window_size(self) -> None:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(0)
            self._send(f"winsize {size.lines} {size.columns}")

    def _raw_terminal(self) -> list[Any] | None:
        """With -t: our pty passes keys through untouched, the guest's pty does the line discipline."""
        if not self.plan.process.terminal or not os.isatty(0):
            return None
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        self._send_window_size()
        return saved


def _relays(plan: LaunchPlan, dns_proxy: bool) -> tuple[PortRelay, ...]:
    """The guest ports carried to the container: VNC (where -p sends it), Docker's DNS over TCP."""
    vnc = (PortRelay("0.0.0.0", plan.vnc_port),) if plan.vnc_port else ()
    return vnc + ((PortRelay(netsetup.DOCKER_DNS[0], netsetup.DOCKER_DNS[1]),) if dns_proxy else ())


def _tail(path: Path) -> None:
    """RUNCVM_KERNEL_DEBUG: the boot, as it happens, on stderr."""
    with contextlib.suppress(OSError), path.open("rb") as console:
        while True:
            data = console.read(65536)
            if data:
                os.write(2, data)
            else:
                time.sleep(0.1)


def _accelerator(requested: str) -> AcceleratorChoice:
    """virtainer.accel's choice; `auto` probes QEMU once per host boot (cached in SHARED_CACHE)."""
    if requested != "auto":
        return choose_accelerator(requested)
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    cached = Path(SHARED_CACHE) / f"accelerator-{boot_id}.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        data = json.loads(cached.read_text())
        return AcceleratorChoice(data["kind"], data["reason"] + " (probed earlier this boot)")
    choice = choose_accelerator(requested)
    with contextlib.suppress(OSError):
        temporary = cached.with_suffix(f".{os.getpid()}")
        temporary.write_text(json.dumps({"kind": choice.kind, "reason": choice.reason}))
        temporary.replace(cached)
    return choice


def main() -> int:
    try:
        plan = LaunchPlan.load(os.environ.get("VIRTAINER_PLAN", PLAN_PATH))
        return Launcher(plan).run()
    except VirtainerError as error:
        log(str(error))
        return EXIT_LAUNCH_FAILED
    except OSError as error:
        log(f"cannot launch the VM: {error}")
        return EXIT_LAUNCH_FAILED


if __name__ == "__main__":
    sys.exit(main())
