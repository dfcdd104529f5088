"""What the routes call: blocking core calls in a thread pool, one operation per VM at a time.

- Every libvirt call runs in a dedicated thread pool, never on the event loop.
- Readiness waits (up to the boot timeout after each start or revert) run on a thread of their
  own per VM, never in that pool; a new start or revert cancels the previous wait.
- `OperationGuard` admits one mutating operation per VM; a second one gets ConflictError (409)
  at once, naming the one in progress. It is thread-safe, so the container controller can hold
  it too (e.g. around `docker stop`), and it tells the controller which power-offs were asked for.
- GET results are cached for a fraction of a second with single-flight loading: 200 clients
  polling one VM cost one libvirt round trip, not 200. Operations and libvirt lifecycle events
  drop the cached entry, so a status read after an operation returns is never stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from virtainer.api import actions, models
from virtainer.api.events import EventHub
from virtainer.api.settings import ApiSettings
from virtainer.domain_model import recorded_stages
from virtainer.errors import ConflictError, NotFoundError, VirtainerError
from virtainer.files import write_atomic
from virtainer.hypervisor import Hypervisor
from virtainer.readiness import Readiness, StageRecord, wait_until_ready
from virtainer.spec import READINESS_FILE, VmSpec

T = TypeVar("T")
STALE_FACTOR = 3  # a cached status older than this many TTLs is never served
GUEST_FACTS_TTL_S = 10.0  # the agent is asked for guest facts at most this often per VM
log = logging.getLogger("virtainer.api")


class OperationGuard:
    """At most one mutating operation per VM; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._running: dict[str, tuple[str, float]] = {}
        self._off_on_request: set[str] = set()
        self._closing = False

    def off_on_request(self, vm: str) -> bool:
        """The VM is off because an operation asked for it (stop, destroy, a revert), or one is
        in progress: a supervisor should not take that for the guest powering itself off."""
        with self._lock:
            return vm in self._running or vm in self._off_on_request

    def record_state(self, vm: str, state: str) -> None:
        with self._lock:
            if state in ("shut-off", "crashed"):
                self._off_on_request.add(vm)
            else:
                self._off_on_request.discard(vm)

    def current(self, vm: str) -> str | None:
        with self._lock:
            entry = self._running.get(vm)
        return entry[0] if entry else None

    def drain(self, timeout_s: float) -> list[str]:
        """Admit no new operation and wait, at most timeout_s, for those in progress to end (the
        container stopping must not cut a revert or a memory snapshot in half). Returns the
        operations still running at the deadline (empty: all ended)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._closing = True
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            return [f"{operation} of {vm}" for vm, (operation, _since) in self._running.items()]

    @contextlib.contextmanager
    def hold(self, vm: str, operation: str) -> Iterator[None]:
        with self._lock:
            if self._closing:
                raise ConflictError(f"cannot {operation} VM '{vm}': the server is stopping")
            if vm in self._running:
                other, since = self._running[vm]
                raise ConflictError(
                    f"VM '{vm}' is busy: {other} in progress for {time.monotonic() - since:.1f} s",
                    hint="retry when it has finished",
                )
            self._running[vm] = (operation, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(vm, None)
                self._lock.notify_all()


OnReady = Callable[[str, Readiness], None]


class Backend:
    def __init__(self, settings: ApiSettings, events: EventHub, *, on_ready: OnReady | None = None) -> None:
        self.settings = settings
        self.events = events
        self.on_ready = on_ready  # e.g. the container's health file, after a start through the API
        self.guard = OperationGuard()
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="virtainer-api")
        self._hv: Hypervisor | None = None
        self._hv_lock = threading.Lock()
        self._watch: int | None = None
        self._cache: dict[str, tuple[float, models.VmPublic]] = {}
        self._encoded: dict[str, tuple[models.VmPublic, bytes]] = {}
        self._generation: dict[str, int] = {}
        self._loading: dict[str, asyncio.Future[models.VmPublic]] = {}
        self._readiness_waits: dict[str, threading.Event] = {}  # vm -> cancels its current wait
        self._readiness_lock = threading.Lock()
        self._closed = False
        self._guest_facts: dict[str, tuple[float, models.GuestFacts | None]] = {}

    # -- libvirt connection --------------------------------------------------------------------

    def hypervisor(self) -> Hypervisor:
        """The shared connection, reopened when libvirtd went away. Call from worker threads."""
        with self._hv_lock:
            if self._hv is None or not self._hv.alive():
                if self._hv is not None:
                    self._hv.close()
                self._hv = Hypervisor(self.settings.libvirt_uri)
                self._watch = self._hv.watch_lifecycle(self._on_lifecycle)
            return self._hv

    def _on_lifecycle(self, vm: str, event: str, detail: str) -> None:
        self._invalidate(vm)
        self.events.publish("lifecycle", vm, event=event, detail=detail)

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """call(hypervisor, *args) on the thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: call(self.hypervisor(), *args))

    def close(self) -> None:
        with self._readiness_lock:
            self._closed = True
            for cancel in self._readiness_waits.values():
                cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._hv_lock:
            if self._hv is not None:
                if self._watch is not None:
                    self._hv.unwatch(self._watch)
                self._hv.close()
                self._hv = None

    # -- reads ---------------------------------------------------------------------------------

    def check_visible(self, vm: str) -> None:
        if self.settings.vms and vm not in self.settings.vms:
            raise NotFoundError(f"no VM named '{vm}'")

    async def names(self) -> list[str]:
        if self.settings.vms:
            return list(self.settings.vms)
        return await self.run(lambda hv: hv.list_names())

    async def status(self, vm: str) -> models.VmPublic:
        """Cached for status_ttl_s; for a few TTLs more the cached status is served while a fresh
        one loads in the background (so pollers never queue behind libvirt). Operations and
        lifecycle events drop the entry: the next read then waits for a fresh one."""
        self.check_visible(vm)
        cached = self._cache.get(vm)
        age = time.monotonic() - cached[0] if cached else None
        if cached and age is not None and age < self.settings.status_ttl_s * STALE_FACTOR:
            if age >= self.settings.status_ttl_s:
                self._refresh(vm).add_done_callback(_ignore_failure)
            return _with_operation(cached[1], self.guard.current(vm))
        status = await asyncio.shield(self._refresh(vm))
        return _with_operation(status, self.guard.current(vm))

    def _refresh(self, vm: str) -> asyncio.Future[models.VmPublic]:
        loading = self._loading.get(vm)
        if loading is None:  # single flight: concurrent readers share one libvirt round trip
            loading = asyncio.ensure_future(self._load_status(vm))
            self._loading[vm] = loading
            loading.add_done_callback(lambda done: self._forget_load(vm, done))
        return loading

    def _forget_load(self, vm: str, done: asyncio.Future[models.VmPublic]) -> None:
        if self._loading.get(vm) is done:
            del self._loading[vm]

    def _invalidate(self, vm: str) -> None:
        """Thread-safe enough: dict operations are atomic, and a load that began before this
        call sees the generation changed and does not store what it read."""
        self._generation[vm] = self._generation.get(vm, 0) + 1
        self._cache.pop(vm, None)
        self._loading.pop(vm, None)  # readers from now on wait for a load that starts after this

    async def _load_status(self, vm: str) -> models.VmPublic:
        generation = self._generation.get(vm, 0)
        facts = self._guest_facts.get(vm)
        fresh_facts = facts is None or time.monotonic() - facts[0] >= GUEST_FACTS_TTL_S
        status = await self.run(actions.vm_status, vm, fresh_facts)
        if fresh_facts:
            self._guest_facts[vm] = (time.monotonic(), status.guest)
        elif facts is not None and status.state == "running":
            status = status.model_copy(update={"guest": facts[1]})  # the guest's facts change slowly
        if self._generation.get(vm, 0) == generation:
            self._cache[vm] = (time.monotonic(), status)
        self._encoded.pop(vm, None)
        return status

    async def status_json(self, vm: str) -> bytes:
        """The status as JSON bytes, encoded once per cached status: the polling fast path."""
        status = await self.status(vm)
        encoded = self._encoded.get(vm)
        if encoded is None or encoded[0] is not status:
            encoded = (status, status.model_dump_json().encode())
            if status.operation is None:  # the cached object itself; with an operation it is a copy
                self._encoded[vm] = encoded
        return encoded[1]

    async def statuses(self) -> list[models.VmPublic]:
        result = []
        for vm in await self.names():
            with contextlib.suppress(NotFoundError):  # undefined meanwhile
                result.append(await self.status(vm))
        return result

    # -- operations ----------------------------------------------------------------------------

    async def operate(self, vm: str, operation: str, call: Callable[..., T], *args: Any) -> T:
        """Run one mutating operation under the VM's guard, and tell subscribers about it."""
        self.check_visible(vm)
        with self.guard.hold(vm, operation):
            self.events.publish("operation", vm, operation=operation, phase="started")
            try:
                result = await self.run(call, vm, *args)
            except VirtainerError as error:
                failed = {"operation": operation, "phase": "failed", "error": error.message}
                self.events.publish("operation", vm, **failed)
                raise
            finally:
                self._invalidate(vm)
            state = getattr(result, "state", None)  # power operations and reverts say where they left it
            if isinstance(state, str):
                self.guard.record_state(vm, state)
        self.events.publish("operation", vm, operation=operation, phase="done")
        return result

    async def watch_readiness_files(self, interval_s: float = 1.0) -> None:
        """Publish the stages another process records (the container controller's boot wait).

        Only for the VMs this server is limited to: on a host serving every domain, stages are
        published by the starts it performs itself (track_readiness).
        """
        seen: dict[str, set[tuple[str, float]]] = {}
        while True:
            for vm in self.settings.vms:
                with contextlib.suppress(VirtainerError, OSError):
                    for stage in await self.run(_recorded_stages, vm):
                        if (stage.stage, stage.at) not in seen.setdefault(vm, set()):
                            seen[vm].add((stage.stage, stage.at))
                            self._invalidate(vm)
                            details = {"stage": stage.stage, "elapsed_s": stage.elapsed_s}
                            self.events.publish("readiness", vm, **details, detail=stage.detail)
            await asyncio.sleep(interval_s)

    def track_readiness(self, vm: str) -> None:
        """After a (re)start: record readiness stages (readiness.json), publish them as events, and
        call on_ready once every wanted stage is reached. On a thread of the VM's own, so that
        waits never occupy the threads that serve requests; the previous wait is cancelled."""
        cancel = threading.Event()
        with self._readiness_lock:
            if self._closed:
                return
            previous = self._readiness_waits.get(vm)
            if previous is not None:
                previous.set()
            self._readiness_waits[vm] = cancel
        waiter = threading.Thread(target=self._wait_ready, args=(vm, cancel), name=f"readiness-{vm}", daemon=True)
        waiter.start()

    def _wait_ready(self, vm: str, cancel: threading.Event) -> None:
        try:
            dom = self.hypervisor().domain(vm)
            metadata = dom.metadata()
            state_dir = metadata.get("state-dir")
            wanted = recorded_stages(metadata)
            ready_command = metadata.get("ready-command") or None
            readiness = Readiness(time.time(), wanted, ready_command=ready_command)
            record = Path(state_dir) / READINESS_FILE if state_dir else None

            def on_stage(stage: StageRecord) -> None:
                if cancel.is_set():
                    return  # a newer start's wait owns the record now
                if record is not None:
                    write_atomic(record, readiness.to_json())
                self._invalidate(vm)
                details = {"stage": stage.stage, "elapsed_s": stage.elapsed_s, "detail": stage.detail}
                self.events.publish("readiness", vm, **details)

            if record is not None:
                write_atomic(record, readiness.to_json())
            timeout_s = VmSpec.boot_timeout_s  # the default: a definition does not record its VM's own
            wait_until_ready(dom, readiness, timeout_s=timeout_s, on_stage=on_stage, stop=cancel)
            if readiness.ready and not cancel.is_set() and self.on_ready is not None:
                self.on_ready(vm, readiness)
        except (VirtainerError, OSError) as error:  # the VM stopped or never got ready
            log.info("readiness of %s: %s", vm, error)
        finally:
            with self._readiness_lock:
                if self._readiness_waits.get(vm) is cancel:
                    del self._readiness_waits[vm]


def _with_operation(status: models.VmPublic, operation: str | None) -> models.VmPublic:
    return status if status.operation == operation else status.model_copy(update={"operation": operation})


def _recorded_stages(hv: Hypervisor, vm: str) -> list[StageRecord]:
    state_dir = hv.metadata(vm).get("state-dir") if hv.exists(vm) else None
    readiness = Readiness.load(Path(state_dir) / READINESS_FILE) if state_dir else None
    return readiness.records() if readiness else []


def _ignore_failure(future: asyncio.Future[models.VmPublic]) -> None:
    """A background refresh that failed (VM undefined meanwhile): the next read reports it."""
    if not future.cancelled():
        future.exception()
