"""What the spec's defaults and checks depend on outside the settings: passed in, so that
resolution stays pure and testable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from virtainer.firmware import UefiFirmware, find_ovmf, swtpm_installed


@dataclass(frozen=True)
class HostFacts:
    """What defaults are sized from; passed in so resolution stays pure and testable."""

    cpus: int
    memory_mib: int
    uefi: UefiFirmware | None = None  # OVMF, when installed
    swtpm: bool = False  # swtpm, when installed
    in_container: bool = False  # decides where VNC listens by default

    @classmethod
    def probe(cls) -> HostFacts:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return cls(
            cpus=os.cpu_count() or 1,
            memory_mib=pages // (1024 * 1024),
            uefi=find_ovmf(),
            swtpm=swtpm_installed(),
            in_container=running_in_container(),
        )


def running_in_container() -> bool:
    return any(Path(marker).exists() for marker in ("/.dockerenv", "/run/.containerenv"))
