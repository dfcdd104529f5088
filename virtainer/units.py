"""Parsing of human-written sizes ("512M", "8G", "1.5GiB") into MiB."""

from __future__ import annotations

import re
from fractions import Fraction

# ASCII digits only ("²" and "١٢" are digits to str.isdigit and int()), at most 20 of them on
# either side of the point: exact arithmetic, no float overflow on a 400-digit number
_SIZE = re.compile(r"[ \t]*([0-9]{1,20}(?:\.[0-9]{1,20})?)[ \t]*([kmgt]?)(i?b?)[ \t]*", re.IGNORECASE | re.ASCII)
_MIB_PER_UNIT = {"k": Fraction(1, 1024), "m": Fraction(1), "g": Fraction(1024), "t": Fraction(1024 * 1024)}

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
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError("not a size")
    number, unit, _suffix = match.groups()
    unit = (unit or default_unit).lower()
    mib = Fraction(number) * _MIB_PER_UNIT[unit]
    if mib < 1 or mib.denominator != 1:
        raise ValueError("not a whole number of MiB")
    return int(mib)


def format_mib(mib: int) -> str:
    if mib % (1024 * 1024) == 0:
        return f"{mib // (1024 * 1024)}T"
    if mib % 1024 == 0:
        return f"{mib // 1024}G"
    return f"{mib}M"
