"""How the `virtainer` command presents itself: the placeholders its help shows for the VM
settings' values, and the status table fitted to the terminal's width (one VM host's, or a
fleet's with a source column)."""

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


def status_table(
    statuses: Sequence[VmStatus], width: int, *, sources: Sequence[str] = (), unreachable: Sequence[str] = ()
) -> Table:
    """The table of `virtainer status`: name, state and address never cut, at any width.

    The fleet view gives `sources`, one a status (the container or API it came from): they come
    first, never cut either, and each `unreachable` source gets a row saying so."""
    headers: tuple[str, ...] = HEADERS
    always = ALWAYS_SHOWN
    rows: list[tuple[str, ...]] = [status_row(item) for item in statuses]
    if sources or unreachable:
        headers, always = ("source", *HEADERS), ALWAYS_SHOWN + 1
        blank = ("",) * (len(HEADERS) - 2)
        rows = [(source, *row) for source, row in zip(sources, rows, strict=True)]
        rows += [(source, "-", "unreachable", *blank) for source in unreachable]
    return _fitted(headers, rows, always, width)


def _fitted(headers: Sequence[str], rows: Sequence[Sequence[str]], always: int, width: int) -> Table:
    """The first `always` columns whole, then each other one while it fits `width` whole."""
    from rich import box
    from rich.table import Table

    shown: list[int] = []
    used = -GAP
    for index, header in enumerate(headers):
        needed = max(len(line) for text in (header, *(row[index] for row in rows)) for line in text.split("\n"))
        if index < always or used + GAP + needed <= width:
            shown.append(index)
            used += GAP + needed
    # no borders: a blank as the column separator, one more as padding (GAP); wider than `width`
    # only when the columns always shown need it (rich would cut them to fit)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    if used > width:
        table.width = used
    for index in shown:
        table.add_column(headers[index], no_wrap=True)
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    return table
