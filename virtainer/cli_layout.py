"""How the `virtainer` command presents itself: the placeholders its help shows for the VM
settings' values, and the status table fitted to the terminal's width."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich's table module loads only when a command draws one
    from rich.table import Table

    from virtainer.operations import VmStatus

# What each VM setting's flag takes, as `--help` shows it (argparse would say SPEC_MEMORY)
METAVARS = {
    "name": "NAME", "vcpus": "N", "memory": "SIZE", "disk_size": "SIZE", "image": "PATH", "image_url": "URL",
    "image_sha256": "SHA256", "os_variant": "OS", "user": "USER", "hostname": "HOSTNAME",
    "accelerator": "auto|kvm|tcg", "ssh_keys": "KEY|FILE", "user_data": "FILE", "meta_data": "FILE",
    "network_config": "FILE", "seed_iso": "FILE", "seed_path": "PATH", "password": "PASSWORD",
    "password_policy": "POLICY", "mac": "MAC", "disks": "DISK", "network": "NETWORK", "ports": "PORTS",
    "guest_forwards": "FORWARDS", "guest_restrict": "0|1", "guest_lan": "CIDR", "diff": "PATH", "image_dir": "DIR",
    "state_dir": "DIR", "kernel": "FILE", "initrd": "FILE", "cmdline": "CMDLINE", "machine": "pc|q35",
    "profile": "PROFILE", "windows_drivers": "virtio|none", "firmware": "bios|uefi", "tpm": "none|emulated",
    "clock": "utc|localtime", "disk_bus": "BUS", "disk_cache": "MODE", "video": "MODEL", "vnc": "VNC",
    "vnc_listen": "ADDRESS", "vnc_password": "PASSWORD", "storage_id": "ID", "storage_root": "DIR",
    "wait_for": "STAGES", "boot_timeout": "SECONDS", "stop_timeout": "SECONDS",
}  # fmt: skip


def metavar(key: str) -> str:
    """The placeholder for a setting's value (a setting added without one shows its key)."""
    return METAVARS.get(key, key.upper())


# The status table's columns, most wanted first. The first three are always shown, whole; the
# others join while they fit the width whole, and the rest are left out (--json has every field).
HEADERS = ("name", "state", "address", "accel", "vcpus", "memory", "OS", "ready stages", "diff")
ALWAYS_SHOWN = 3
GAP = 2  # columns are set apart by two blanks, no borders


def status_row(item: VmStatus) -> tuple[str, ...]:
    """One VM's cells, in the order of HEADERS (one address a line)."""
    return (
        item.name,
        item.state,
        "\n".join(address.address for address in item.addresses),
        item.accelerator,
        str(item.vcpus),
        f"{item.memory_mib}M",
        f"{item.guest.os_id} {item.guest.os_version_id}".strip() if item.guest else "",
        " ".join(f"{record.stage}@{record.elapsed_s:.0f}s" for record in item.readiness.stages),
        item.diff.path,
    )


def status_table(statuses: Sequence[VmStatus], width: int) -> Table:
    """The table of `virtainer status`: name, state and address never cut, at any width."""
    from rich import box
    from rich.table import Table

    rows = [status_row(item) for item in statuses]
    shown: list[int] = []
    used = -GAP
    for index, header in enumerate(HEADERS):
        needed = max(len(line) for text in (header, *(row[index] for row in rows)) for line in text.split("\n"))
        if index < ALWAYS_SHOWN or used + GAP + needed <= width:
            shown.append(index)
            used += GAP + needed
    # no borders: a blank as the column separator, one more as padding (GAP)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    for index in shown:
        table.add_column(HEADERS[index], no_wrap=True)
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    return table
