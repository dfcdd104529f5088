"""The container's process once the VM exists: stands in for the command while the VM runs it.

The launcher sets the VM up with libvirt embedded, starts it paused and execs this module: the
same process (PID, stdio, cgroup) without libvirt's driver, its threads and heaps, nor the setup's
modules (~35 MiB less per container). QEMU's QMP monitor, which libvirt made, is ours from then on:
it resumes the VM, reports its power-off and ends QEMU. The command's stdout and stderr arrive on
their own virtio-serial ports and go to this process's stdout and stderr, so Docker sees them as it
would with runc; the control port carries signals, window sizes, docker exec's sessions and the
guest's DNS queries in, and the exit status out (see guest/init.c).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import socket
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

from virtainer.errors import VirtainerError
from virtainer.runtime import hostlink
from virtainer.runtime.guest_io import (
    PORT_CONTROL,
    PORT_STDERR,
    PORT_STDIN,
    PORT_STDOUT,
    VmFiles,
    domain_name,
    guest_config,
)
from virtainer.runtime.plan import (
    EMBED_ROOT,
    EXEC_SOCKET,
    GUEST_DIR,
    KERNEL,
    PLAN_PATH,
    STATE_DIR,
    VM_ROOTFS,
    LaunchPlan,
    Process,
    qemu_pidfile,
)
from virtainer.runtime.qmp import Monitor
from virtainer.runtime.stdio import is_dev_null
from virtainer.runtime.timeline import Timeline

TYPE_CHECKING = False  # as in plan: no typing at run time
if TYPE_CHECKING:
    from typing import Any

EXIT_LAUNCH_FAILED = 125  # like `docker run`'s own failures: the command never ran
FLUSH_DEADLINE_S = 5.0  # after the guest reports its exit: wait this long for the last output
STOP_DEADLINE_S = 5.0  # then this long for the guest to power off before the VM is ended
END_DEADLINE_S = 5.0  # then this long for QEMU to exit on "quit" (virtiofsd on SIGTERM) before SIGKILL
DNS_IN_FLIGHT = 16  # the guest's DNS queries answered at once; more are dropped (the guest retries)
FORWARDED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip
# blocked by the launcher from its exec until our handlers are in place: none is lost meanwhile
HANDED_OVER_SIGNALS = (*FORWARDED_SIGNALS, signal.SIGWINCH)
# libvirt's files for the domain under EMBED_ROOT (the embedded driver's layout)
VIRTIOFSD_PIDFILES = "run/qemu/*-fs.pid"
MONITOR_SOCKETS = "lib/qemu/domain-*/monitor.sock"


def log(message: str) -> None:
    sys.stderr.write(f"virtainer: {message}\n")
    sys.stderr.flush()


def vm_files() -> VmFiles:
    state = Path(STATE_DIR)
    return VmFiles(
        kernel=Path(GUEST_DIR) / KERNEL,
        initrd=state / "initrd.img",
        console_log=state / "console.log",
        socket_dir=state,
        rootfs=Path(VM_ROOTFS),
    )


def wants_stdin(plan: LaunchPlan) -> bool:
    """Whether our stdin goes to the guest's command: with -t, or when it is not /dev/null (-i)."""
    return plan.process.terminal or not is_dev_null(0)


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


class Supervisor:
    def __init__(self, plan: LaunchPlan, *, forward_dns_tcp: bool) -> None:
        self.plan = plan
        self.forward_dns_tcp = forward_dns_tcp
        self.files = vm_files()
        self.control: socket.socket | None = None
        self.control_lock = threading.Lock()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.timeline = Timeline(plan.debug)
        self.exec_clients: dict[int, socket.socket] = {}
        self.next_session = 0
        self.dns_slots = threading.BoundedSemaphore(DNS_IN_FLIGHT)

    def _connect(self, port: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.files.socket(port)))
        return sock

    def run(self) -> int:
        self.timeline.mark("supervisor's imports done (libvirt let go)")
        monitor: Monitor | None = None
        try:
            monitor = Monitor(_one(MONITOR_SOCKETS))
            if self.forward_dns_tcp:
                hostlink.forward_tcp(hostlink.DOCKER_DNS[1], hostlink.DOCKER_DNS)  # DNS over TCP
            out = Relay(self._connect(PORT_STDOUT), 1)
            err = Relay(self._connect(PORT_STDERR), 2)
            self.control = self._connect(PORT_CONTROL)
            stdin = self._connect(PORT_STDIN)
            threading.Thread(target=self._read_control, daemon=True).start()
            self._install_signal_handlers()
            saved_tty = self._raw_terminal()
            if wants_stdin(self.plan):
                threading.Thread(target=self._pump_stdin, args=(stdin,), daemon=True).start()
            monitor.execute("cont")
            self.timeline.mark("VM resumed")
            threading.Thread(target=self._serve_exec, daemon=True).start()
            if self.plan.debug:
                threading.Thread(target=_tail, args=(self.files.console_log,), daemon=True).start()
            try:
                return self._wait_for_exit(monitor, out, err)
            finally:
                if saved_tty is not None:
                    termios.tcsetattr(0, termios.TCSADRAIN, saved_tty)
        finally:
            self._end_vm(monitor)
            self.timeline.mark("QEMU and virtiofsd ended")
            for libvirt_log in sorted(Path(EMBED_ROOT).glob("log/**/*.log")):
                self.timeline.libvirt_log(libvirt_log)

    def _wait_for_exit(self, monitor: Monitor, out: Relay, err: Relay) -> int:
        while True:
            try:
                line = self.lines.get(timeout=0.25)
            except queue.Empty:
                if not monitor.stopped.is_set():
                    continue
                line = None
            if line is None:
                self._report_lost_vm()
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
                monitor.stopped.wait(STOP_DEADLINE_S)
                self.timeline.mark("VM powered off")
                return status

    def _end_vm(self, monitor: Monitor | None) -> None:
        """What libvirt's destroy did: QEMU ends ("quit" on its monitor, else SIGTERM), then virtiofsd."""
        name = domain_name(self.plan.container_id)
        if qemu := _pid_in(qemu_pidfile(name)):
            _stop_process(qemu, lambda pidfd: monitor.execute("quit", END_DEADLINE_S) if monitor else _terminate(pidfd))
        for pidfile in Path(EMBED_ROOT).glob(VIRTIOFSD_PIDFILES):
            if virtiofsd := _pid_in(pidfile):
                _stop_process(virtiofsd, _terminate)

    def _report_lost_vm(self) -> None:
        log("the VM stopped before the command finished (domain shut-off); its console said:")
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
            answer = hostlink.ask_docker_dns(bytes.fromhex(payload))
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
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDED_OVER_SIGNALS)  # what came meanwhile, now

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


def _one(pattern: str) -> Path:
    found = sorted(Path(EMBED_ROOT).glob(pattern))
    if len(found) != 1:
        raise VirtainerError(f"expected one {pattern} under {EMBED_ROOT}, found {len(found)}")
    return found[0]


def _pid_in(pidfile: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(pidfile.read_text())
    return None


def _terminate(pidfd: int) -> None:
    signal.pidfd_send_signal(pidfd, signal.SIGTERM)


def _stop_process(pid: int, ask: Callable[[int], object]) -> None:
    """ask(pidfd) the process to exit; SIGKILL when it has not within END_DEADLINE_S."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # gone already
    try:
        with contextlib.suppress(OSError):
            ask(pidfd)
        if not select.select([pidfd], [], [], END_DEADLINE_S)[0]:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)


def _tail(path: Path) -> None:
    """RUNCVM_KERNEL_DEBUG: the boot, as it happens, on stderr."""
    with contextlib.suppress(OSError), path.open("rb") as console:
        while True:
            data = console.read(65536)
            if data:
                os.write(2, data)
            else:
                time.sleep(0.1)


def load_plan() -> LaunchPlan:
    return LaunchPlan.load(os.environ.get("VIRTAINER_PLAN", PLAN_PATH))


def reporting_failures(run: Callable[[], int], failing: str) -> int:
    """run(), with a VirtainerError or OSError said in one line on stderr and EXIT_LAUNCH_FAILED."""
    try:
        return run()
    except VirtainerError as error:
        log(str(error))
    except OSError as error:
        log(f"{failing}: {error}")
    return EXIT_LAUNCH_FAILED


def main(argv: list[str]) -> int:
    """argv: the launcher's hand-over, one JSON object (see launcher.hand_over)."""
    handover = json.loads(argv[0])

    def supervise() -> int:
        return Supervisor(load_plan(), forward_dns_tcp=bool(handover["forward_dns_tcp"])).run()

    return reporting_failures(supervise, "cannot run the VM")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
