"""The files that belong to a diff: they sit next to it, are named after it, and travel with it.

A diff copied to a teammate or another volume keeps its base record, NIC, disk formats, UEFI
variables, generated password and snapshot records only because every one of them is found from
the diff's own path. This is the one place that names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DiffFiles:
    diff: Path

    def beside(self, suffix: str) -> Path:
        return self.diff.with_name(self.diff.name + suffix)

    @property
    def base_record(self) -> Path:
        """The base image's identity: a diff is only ever reattached to the very same base."""
        return self.beside(".base.json")

    @property
    def nic_record(self) -> Path:
        """The NIC's MAC address: a copied diff keeps its NIC."""
        return self.beside(".nic.json")

    @property
    def format_record(self) -> Path:
        """The disks' formats, recorded when first attached: never probed again."""
        return self.beside(".formats.json")

    @property
    def nvram(self) -> Path:
        """UEFI variables (boot entries, ...)."""
        return self.beside(".nvram.fd")

    @property
    def password(self) -> Path:
        """A generated password: same disk, same password, same seed."""
        return self.beside(".password")

    @property
    def snapshots(self) -> Path:
        """The snapshots' descriptions (snapshots.SnapshotStore); the snapshots are inside the diff."""
        return self.beside(".snapshots")

    @property
    def lock(self) -> Path:
        """One user of a diff at a time (storage.DiffLock)."""
        return self.beside(".lock")
