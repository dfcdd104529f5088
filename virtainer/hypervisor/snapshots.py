"""Snapshots inside the diff: libvirt's internal snapshots, and QEMU's for a running disk.

Snapshots are internal (inside the diff qcow2): they travel with the volume, and the read-only
base is never written. virtainer/snapshots.py decides what to call, and when.
"""

from __future__ import annotations

import json
from typing import Any

import libvirt  # type: ignore[import-untyped]
import libvirt_qemu  # type: ignore[import-untyped]

from virtainer.errors import HypervisorError
from virtainer.hypervisor.base import DomainBase
from virtainer.hypervisor.translate import no_raw_libvirt_errors, snapshot_error


@no_raw_libvirt_errors
class Snapshots(DomainBase):
    def snapshot_create(self, xml: str, *, redefine: bool = False, current: bool = False) -> None:
        """Create (or, with redefine, only record in libvirt) one snapshot from its XML."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC if not redefine else 0
        if redefine:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT if current else 0
        try:
            self._domain.snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as error:
            raise snapshot_error(error, self.name, "create") from None

    def snapshot_disk_live(self, snapshot: str, diff_path: str) -> None:
        """A disk-only internal snapshot of the running diff, with no memory state.

        libvirt 9.0 refuses internal disk-only snapshots of an active domain ("active qemu domains
        require external disk snapshots"), and external ones would add a file beside the diff that
        hangs off it. QEMU's blockdev-snapshot-internal-sync does exactly what we need; libvirt
        marks the domain "custom-monitor" tainted for it, which changes nothing else.
        """
        command = {"device": self._format_node_of(diff_path), "name": snapshot}
        self._qmp({"execute": "blockdev-snapshot-internal-sync", "arguments": command})

    def snapshot_delete_live_internal(self, snapshot: str, diff_path: str) -> None:
        """Undo snapshot_disk_live when recording it in libvirt failed (libvirt never knew it)."""
        command = {"device": self._format_node_of(diff_path), "name": snapshot}
        self._qmp({"execute": "blockdev-snapshot-delete-internal-sync", "arguments": command})

    def _format_node_of(self, path: str) -> str:
        nodes = self._qmp({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        for node in nodes:
            if node.get("file") == path and node.get("drv") == "qcow2" and not node.get("ro"):
                return str(node["node-name"])
        raise HypervisorError(f"VM '{self.name}' has no writable qcow2 node for {path}")

    def _qmp(self, command: dict[str, Any]) -> Any:
        try:
            reply = libvirt_qemu.qemuMonitorCommand(self._domain, json.dumps(command), 0)
        except libvirt.libvirtError as error:
            raise snapshot_error(error, self.name, command["execute"]) from None
        return json.loads(reply).get("return")

    def snapshot_names(self) -> list[str]:
        try:
            return [str(snap.getName()) for snap in self._domain.listAllSnapshots(0)]
        except libvirt.libvirtError as error:
            raise snapshot_error(error, self.name, "list") from None

    def snapshot_xml(self, snapshot: str) -> str:
        return str(self._snapshot(snapshot).getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE))

    def snapshot_current(self) -> str | None:
        try:
            if not self._domain.hasCurrentSnapshot(0):
                return None
            return str(self._domain.snapshotCurrent(0).getName())
        except libvirt.libvirtError:
            return None

    def snapshot_delete(self, snapshot: str, *, metadata_only: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0
        try:
            self._snapshot(snapshot).delete(flags)
        except libvirt.libvirtError as error:
            raise snapshot_error(error, self.name, "delete") from None

    def snapshot_revert(self, snapshot: str, *, running: bool) -> None:
        """Revert disk (and memory, if the snapshot has it); running=True leaves the VM running."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING if running else 0
        try:
            self._domain.revertToSnapshot(self._snapshot(snapshot), flags)
        except libvirt.libvirtError as error:
            raise snapshot_error(error, self.name, "revert") from None

    def _snapshot(self, snapshot: str) -> libvirt.virDomainSnapshot:
        try:
            return self._domain.snapshotLookupByName(snapshot, 0)
        except libvirt.libvirtError as error:
            raise snapshot_error(error, self.name, "look up") from None
