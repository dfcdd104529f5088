"""Parsing of human-written sizes ("512M", "8G", "1.5GiB") into MiB."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_MIB_PER_UNIT = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}

SIZE_FORMS = "a size such as 512M, 2G, 1.5G or 20GiB (K, M, G, T; binary units)"


def parse_size_mib(text: str | int, *, default_unit: str) -> int:
    """Return the size in MiB, or raise ValueError.

    A bare number is read in `default_unit` ("M" for memory, like virtainers' RAM; "G" for disks).
    "GB" and "GiB" both mean 2**30 bytes: VM tools conventionally mean binary units.
    """
    if isinstance(text, bool):
        raise ValueError("not a size")
    if isinstance(text, int):
        text = str(text)
    match = _SIZE.match(text)
    if not match:
        raise ValueError("not a size")
    number, unit, _suffix = match.groups()
    unit = (unit or default_unit).lower()
    mib = float(number) * _MIB_PER_UNIT[unit]
    if mib < 1 or mib != int(mib):
        raise ValueError("not a whole number of MiB")
    return int(mib)


def format_mib(mib: int) -> str:
    if mib % (1024 * 1024) == 0:
        return f"{mib // (1024 * 1024)}T"
    if mib % 1024 == 0:
        return f"{mib // 1024}G"
    return f"{mib}M"
