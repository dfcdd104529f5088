"""The controller: one VM, its libvirtd, its network, its logs, its graceful end.

Start-up order (nothing on the volume is written before every check passed):
 1. settings -> VmSpec (a bad value: one line naming it, exit 2);
 2. preflight: capabilities and devices the spec needs (one line naming the flag, exit 2); without
    NET_ADMIN, QEMU's user-mode networking replaces the NAT network (said in the log);
 3. the guest LAN is chosen (or checked) and written as libvirt's autostarted `default` network;
 4. libvirtd starts while the plan is checked (base image identity vs the diff, cloud-init input)
    and a child process checks the REST API's settings (pydantic never loads in this process
    before the API's first connection);
 5. the diff lock is taken (a second container on the same diff is refused, exit 4);
 6. iptables rules, then `machine.up` defines and starts the domain;
 7. readiness stages are awaited in a thread; the main loop supervises libvirtd and the domain.

It ends when: a signal asks (graceful stop: guest agent, then ACPI, within the stop timeout,
then destroy; exit 0 when the guest powered off cleanly, 3 when it had to be destroyed), or the
guest powers itself off (exit 0; 1 when it crashed).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING

from virtainer import __version__, machine, nic
from virtainer.api import container as api_container
from virtainer.controller import network, preflight
from virtainer.controller.config import BakedImage, ControllerConfig, container_settings, controller_config
from virtainer.controller.daemons import Daemon, clear_runtime_state, connect_when_ready, libvirtd
from virtainer.controller.health import ReadyFile
from virtainer.controller.logsink import ConsoleMirror, ContainerReporter, LogSink
from virtainer.errors import (
    ConfigError,
    HypervisorError,
    VirtainerError,
    debug_enabled,
    describe_unexpected,
    one_line,
)
from virtainer.exit_codes import EXIT_OK, EXIT_RUNTIME, EXIT_TIMEOUT, exit_status
from virtainer.hypervisor import Hypervisor
from virtainer.readiness import Readiness, ReadinessProbe
from virtainer.spec import (
    USER_DEFAULT_PORTS,
    ContainerFacts,
    HostFacts,
    RawSettings,
    VmSpec,
    container_ports,
    resolve_spec,
    uses_nat_network,
)
from virtainer.storage import DiffLock, require_system_disk

if TYPE_CHECKING:
    from virtainer.api.container import LazyApi

MONITOR_INTERVAL_S = 1.0
HEALTH_PROBE_INTERVAL_S = 10.0  # how often wait_for's exec:CMD is run once the VM is ready
PROBE_FAILURES = 3
CONTROL_PORTS = ("REST API", "VNC")  # reserved ports the guest itself may not reach


class SupervisionGaveUp(HypervisorError):
    """libvirtd keeps dying: the one case in which supervision ends while the guest runs."""


class Controller:
    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        sink: LogSink | None = None,
        baked: BakedImage | None = None,
        config: ControllerConfig | None = None,
    ) -> None:
        self.environ = environ
        self.sink = sink or LogSink()
        self.reporter = ContainerReporter(self.sink)
        self.baked = baked
        self.config = config or controller_config(environ)
        self.ready_file = ReadyFile(self.config.ready_file)
        self.stop_requested = threading.Event()
        self.raw: RawSettings = {}
        self.spec: VmSpec | None = None
        self.daemon: Daemon | None = None
        self.hv: Hypervisor | None = None
        self.lock: DiffLock | None = None
        self.console: ConsoleMirror | None = None
        self.readiness: Readiness | None = None
        self.guest_network: network.GuestNetwork | None = None
        self.capabilities = preflight.Capabilities.current()
        self.facts: ContainerFacts | None = None
        self._restarts: list[float] = []
        self.api: LazyApi | None = None  # the REST API (its port; FastAPI once called), once the VM is defined

    # -- entry ---------------------------------------------------------------------------------

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        if not self.stop_requested.is_set():
            self.sink.line(f"received {signal.Signals(signum).name}: stopping")
        self.stop_requested.set()

    def run(self) -> int:
        try:
            return self._run()
        except VirtainerError as error:
            sys.stderr.write(f"virtainer: error: {one_line(str(error))}\n")
            sys.stderr.flush()
            return exit_status(error)
        except Exception as error:  # noqa: BLE001 - whatever it is: one line and exit 1
            report_unexpected(error, self.environ)
            return EXIT_RUNTIME
        finally:
            self._clean_up()

    def _run(self) -> int:
        self.ready_file.clear()
        self.sink.line(f"virtainer {__version__} controller starting")
        spec = self._resolve_spec()
        # a child process checks the API's settings meanwhile (pydantic stays out of this one)
        api_check = api_container.begin_check(self.environ, spec.name)
        spec = self.spec = self._prepare_network(spec)
        refuse_local_peers = spec.network.mode == "user" and not self.config.guest_control_access
        if api_check is not None and refuse_local_peers:
            # QEMU makes the guest's connections (to 10.0.2.2, or to our address) from here
            self.sink.line("user-mode networking: the REST API refuses connections from inside the container")
        self.daemon = libvirtd(self.config.libvirtd_log)
        clear_runtime_state()
        self.daemon.start()
        # while libvirtd starts: everything that can refuse the start, still without writing
        plan = self._plan(spec)
        api_settings = api_check.result() if api_check is not None else None  # a bad token or address stops us
        if api_settings is not None and refuse_local_peers:
            api_settings = dataclasses.replace(api_settings, refuse_local_peers=True)
        self.lock = DiffLock(spec.diff_path)
        self.lock.acquire()
        self.hv = connect_when_ready(self.daemon, self.config.uri, self.config.libvirtd_start_timeout_s)
        self.sink.line(f"libvirtd ready (pid {self.daemon.pid})")
        if self.stop_requested.is_set():
            return EXIT_OK
        if self.guest_network is not None:
            network.install_rules(self.guest_network)
        if self.config.console_log:
            self.console = ConsoleMirror(spec.serial_log_path, self.sink)
        result = machine.up(spec, self.hv, self.reporter, wait=False)
        if self.console is not None:
            self.console.start()
        self._report_started(plan, result)
        self.api = api_container.start(
            self.environ,
            spec.name,
            self.sink.line,
            on_ready=lambda _vm, readiness: self.ready_file.mark(readiness),
            settings=api_settings,
        )
        self.readiness = result.readiness
        threading.Thread(target=self._watch_readiness, name="readiness", daemon=True).start()
        return self._supervise()

    def _plan(self, spec: VmSpec) -> machine.Plan:
        try:
            return machine.plan_up(spec, None, self.reporter)
        except ConfigError as error:
            # the seed builder names its input (user_data); a container user knows the file
            origin = self.raw.get(error.setting)
            if origin is None:
                raise
            raise ConfigError(origin.origin, error.value, error.accepted) from None

    def _resolve_spec(self) -> VmSpec:
        """The spec, decided once from the settings and what the container knows."""
        raw = self.raw = container_settings(self.environ, baked=self.baked)
        self.facts = ContainerFacts(
            routes=tuple(network.container_routes()),
            net_admin=self.capabilities.has(preflight.CAP_NET_ADMIN),
            api_ports=api_container.reserved_ports(self.environ),  # a bad VIRTAINER_API_PORT stops us here
            reserved_ports=self.config.reserved_ports,
        )
        spec = resolve_spec(raw, HostFacts.probe(), self.facts)
        require_system_disk(spec)
        net = spec.network
        self.sink.line(
            f"VM '{spec.name}': {spec.vcpus} vCPU, {spec.memory_mib} MiB, image {spec.image.describe()}, "
            f"diff {spec.diff_path}, network {net.mode}{':' + net.source if net.source else ''}"
        )
        return spec

    def _origin(self, key: str) -> str:
        """A setting as the user wrote it (VM_GUEST_TCP_FWDS, VIRTAINER_VNC), or its key."""
        item = self.raw.get(key)
        return item.origin if item is not None else key

    def _prepare_network(self, spec: VmSpec) -> VmSpec:
        """Check what the spec's network needs from the container, and set it up without writing
        to the volume; returns the spec with its NIC's MAC decided (the guest's DHCP entry and the
        log name it before the domain is defined)."""
        if spec.network.user_mode_fallback:
            preflight.check_user_mode(spec, self._origin, guest_control_access=self.config.guest_control_access)
            spec = nic.with_nic_mac(spec)
            self._report_user_mode(spec)
        elif uses_nat_network(spec.network):
            if fixes := preflight.check_network_capabilities(self.capabilities):
                self.sink.line(f"not privileged: the NAT network with minimal capabilities ({', '.join(fixes)})")
            spec = nic.with_nic_mac(spec)
            self._define_nat_network(spec)
        return spec

    def _define_nat_network(self, spec: VmSpec) -> None:
        """The guest's NAT network in the container: libvirt's autostarted network, and the rules
        (installed once libvirtd runs)."""
        net = spec.network
        assert net.lan is not None and spec.mac_address is not None and self.facts is not None
        reserved = container_ports(spec.vnc, self.facts)
        guarded = () if self.config.guest_control_access else tuple(p for p in reserved if p.why in CONTROL_PORTS)
        self.guest_network = network.GuestNetwork(
            net.lan, spec.mac_address, net.ports, net.forwards, net.restrict, reserved, guarded
        )
        network.write_autostart_network(network.network_xml(self.guest_network))
        self.sink.line(f"guest LAN {net.lan}, guest address {self.guest_network.guest_ip}, MAC {spec.mac_address}")
        if net.ports is None:
            kept = ", ".join(port.describe() for port in reserved) or "none"
            self.sink.line(f"ports: every TCP and UDP port goes to the guest, except the container's own: {kept}")
        else:
            self.sink.line(f"ports to the guest: {', '.join(rule.describe() for rule in net.ports) or 'none'}")
        if net.forwards:
            self.sink.line(f"guest forwards: {', '.join(forward.describe() for forward in net.forwards)}")
        if net.restrict:
            self.sink.line("guest isolated: it reaches nothing but its forwards; inbound ports still reach it")
        if guarded:
            closed = ", ".join(port.describe() for port in guarded)
            self.sink.line(f"the guest cannot reach {closed} (VIRTAINER_GUEST_CONTROL_ACCESS=1 opens them)")

    def _report_user_mode(self, spec: VmSpec) -> None:
        net = spec.network
        self.sink.line(
            "no NET_ADMIN capability: the VM uses QEMU's user-mode networking (slirp; this libvirt has no "
            "passt backend): outbound traffic works, inbound only on the forwarded ports"
        )
        if "ports" not in self.raw:
            self.sink.line(
                f"no port rules: forwarding {USER_DEFAULT_PORTS} only (every-port forwarding needs "
                "--cap-add NET_ADMIN; VIRTAINER_PORTS or VM_TCP_PORTS chooses the ports)"
            )
        assert net.ports is not None
        self.sink.line(f"ports to the guest: {', '.join(rule.describe() for rule in net.ports) or 'none'}")
        self.sink.line(f"guest LAN {net.lan}, guest address {net.guest_ip}, MAC {spec.mac_address}")

    def _report_started(self, plan: machine.Plan, result: machine.UpResult) -> None:
        if result.generated_password:
            self.sink.line(
                f"no SSH key and no user-data: password for {result.user or 'the default user'} "
                f"(shown once): {result.generated_password}"
            )
        if not plan.spec.default_user:
            return
        if self.guest_network is not None:
            self.sink.line(f"once ready: ssh {plan.spec.default_user}@{_container_address()}")
        elif plan.spec.network.mode == "user" and (port := plan.spec.network.incoming_port(22)):
            option = "" if port == 22 else f"-p {port} "
            self.sink.line(f"once ready: ssh {option}{plan.spec.default_user}@{_container_address()}")

    # -- readiness -----------------------------------------------------------------------------

    def _watch_readiness(self) -> None:
        assert self.spec is not None and self.readiness is not None
        pause = threading.Event()
        while not self.stop_requested.is_set():
            try:
                with Hypervisor(self.config.uri) as hv:
                    dom = hv.domain(self.spec.name)
                    machine.wait_ready(self.spec, dom, self.readiness, self.reporter, stop=self.stop_requested)
            except HypervisorError:
                pause.wait(MONITOR_INTERVAL_S)  # libvirtd restarting, or the guest went away
                continue
            except VirtainerError as error:  # a timeout, a stage that failed (a malformed result.json)
                self.sink.line(f"warning: {one_line(str(error))}; the VM keeps running")
                return
            except Exception as error:  # noqa: BLE001 - a thread must never die with a traceback
                self.sink.line(f"warning: readiness: {describe_unexpected(error)}; the VM keeps running")
                return
            if self.readiness.ready:
                self.ready_file.mark(self.readiness)
                self.sink.line(f"VM '{self.spec.name}' is ready")
                release_freed_memory()  # the boot's transient allocations are over; the container idles now
                if self.spec.ready_command:
                    self._keep_probing(self.spec.ready_command)
            return

    def _keep_probing(self, command: str) -> None:
        """wait_for=...,exec:CMD: after the boot, CMD keeps deciding the container's health (the
        ready file the HEALTHCHECK tests): unhealthy after PROBE_FAILURES failures in a row."""
        assert self.spec is not None and self.readiness is not None
        failures = 0
        while not self.stop_requested.wait(HEALTH_PROBE_INTERVAL_S):
            try:
                with Hypervisor(self.config.uri) as hv:
                    passed = ReadinessProbe(hv.domain(self.spec.name)).exec_probe(command) is not None
            except VirtainerError:
                passed = False
            failures = 0 if passed else failures + 1
            if failures == PROBE_FAILURES and self.ready_file.is_marked():
                self.ready_file.clear()
                self.sink.line(f"health: `{command}` failed {failures} times in a row in the guest: unhealthy")
            elif passed and not self.ready_file.is_marked() and not self.stop_requested.is_set():
                self.ready_file.mark(self.readiness)
                self.sink.line(f"health: `{command}` passes again in the guest: healthy")

    # -- supervision ---------------------------------------------------------------------------

    def _supervise(self) -> int:
        """Watch libvirtd and the domain until a stop is asked or the guest powers off.

        An error in one round (libvirt, anything) is logged and the next round runs: ending here
        would end the container, and QEMU with it, while the guest is fine."""
        assert self.spec is not None and self.daemon is not None
        last_problem = ""
        while not self.stop_requested.wait(MONITOR_INTERVAL_S):
            try:
                ended = self._supervise_once(self.spec.name)
            except SupervisionGaveUp:
                raise
            except HypervisorError:
                continue  # libvirtd is going away: the next round restarts it
            except Exception as error:  # noqa: BLE001
                problem = describe_unexpected(error) if not isinstance(error, VirtainerError) else one_line(str(error))
                if problem != last_problem:  # once per kind of problem, not once a second
                    self.sink.line(f"warning: supervision: {problem}; the VM keeps running, still supervising")
                    if debug_enabled(self.environ):
                        traceback.print_exc()
                last_problem = problem
                continue
            last_problem = ""
            if ended is not None:
                return ended
        return self._graceful_stop()

    def _supervise_once(self, name: str) -> int | None:
        """One round: the container's exit status when the guest is off for good, else None."""
        assert self.daemon is not None
        if not self.daemon.alive():
            self._restart_libvirtd()
            return None
        assert self.hv is not None
        state = self.hv.state(name)
        if state.active or not state.defined:
            return None
        reason = self.hv.shutoff_reason(name)
        self.ready_file.clear()
        if api_container.off_on_request(self.api, name):
            return None  # stopped through the API (or being reverted): the container stays
        self.sink.line(f"the guest powered off ({reason}): the container ends")
        return EXIT_OK if reason == "shutdown" else EXIT_RUNTIME

    def _restart_libvirtd(self) -> None:
        assert self.daemon is not None
        now = time.monotonic()
        window = self.config.libvirtd_restart_window_s
        self._restarts = [at for at in self._restarts if now - at < window] + [now]
        if len(self._restarts) > self.config.libvirtd_max_restarts:
            raise SupervisionGaveUp(
                f"libvirtd died {len(self._restarts)} times within {window:.0f} s; giving up: {self.daemon.log_tail()}"
            )
        self.sink.line(f"libvirtd exited (status {self.daemon.exit_status()}); restarting it, the VM keeps running")
        if self.hv is not None:
            self.hv.close()
        started = time.monotonic()
        self.daemon.start()
        self.hv = connect_when_ready(self.daemon, self.config.uri, self.config.libvirtd_start_timeout_s)
        assert self.spec is not None
        state = self.hv.state(self.spec.name)
        self.sink.line(
            f"libvirtd back after {time.monotonic() - started:.1f} s (pid {self.daemon.pid}); VM {state.value}"
        )

    def _graceful_stop(self) -> int:
        assert self.spec is not None and self.daemon is not None
        self.ready_file.clear()
        if not self.daemon.alive():
            self._restart_libvirtd()
        assert self.hv is not None
        started = time.monotonic()
        timeout = self.spec.stop_timeout_s
        if operation := api_container.operation_in_progress(self.api, self.spec.name):
            self.sink.line(f"waiting for the API's {operation} to finish")
        unfinished = api_container.finish_operations(self.api, timeout)  # a revert is not cut in half
        if unfinished:
            self.sink.line(f"warning: still running after {timeout:.0f} s: {', '.join(unfinished)}")
        timeout = max(1.0, timeout - (time.monotonic() - started))
        self.sink.line(f"shutting the guest down (guest agent, then ACPI; at most {timeout:.0f} s)")
        result = machine.stop(self.hv, self.spec.name, timeout)
        if result.graceful:
            how = {"agent": "guest agent", "acpi": "ACPI power button", "none": "it was already off"}
            self.sink.line(f"the guest powered off ({how[result.method]}, {result.elapsed_s:.1f} s)")
            return EXIT_OK
        self.sink.line(f"the guest did not power off within {timeout:.0f} s and was destroyed")
        return EXIT_TIMEOUT

    def _clean_up(self) -> None:
        self.ready_file.clear()
        api_container.stop(self.api)
        if self.console is not None:
            self.console.stop()
        if self.guest_network is not None and self.hv is not None:
            with contextlib.suppress(VirtainerError):
                network.remove_rules()
        if self.hv is not None:
            self.hv.close()
        if self.daemon is not None:
            self.daemon.stop()
        if self.lock is not None:
            self.lock.release()


def _container_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "<container IP>"


def report_unexpected(error: BaseException, environ: Mapping[str, str]) -> None:
    """One line on stderr for an error nobody expected; its traceback too with VIRTAINER_DEBUG=1."""
    debug = debug_enabled(environ)
    if debug:
        traceback.print_exception(error)
    hint = "" if debug else " (VIRTAINER_DEBUG=1 shows the traceback)"
    sys.stderr.write(f"virtainer: error: {describe_unexpected(error)}{hint}\n")
    sys.stderr.flush()


def main() -> int:
    """The container's main process (under tini). Returns the container's exit status."""
    try:
        controller = Controller(os.environ, baked=BakedImage.load())
    except VirtainerError as error:
        sys.stderr.write(f"virtainer: error: {one_line(str(error))}\n")
        return exit_status(error)
    except Exception as error:  # noqa: BLE001
        report_unexpected(error, os.environ)
        return EXIT_RUNTIME
    signal.signal(signal.SIGTERM, controller.request_stop)
    signal.signal(signal.SIGINT, controller.request_stop)
    return controller.run()


def release_freed_memory() -> None:
    """Give the pages glibc's malloc keeps after frees (rendering, the seed, the readiness wait)
    back to the kernel: an idle container should not hold them (measured: 3.7 MiB PSS less)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
