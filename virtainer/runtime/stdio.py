"""Facts about the runtime's own standard streams, shared by the launcher and the exec client."""

from __future__ import annotations

import os
import stat
import termios


def is_dev_null(fd: int) -> bool:
    """True when `fd` is /dev/null or closed: then there is no stdin to carry into the VM."""
    try:
        info = os.fstat(fd)
    except OSError:
        return True
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3)


def terminal_maps_newlines(fd: int) -> bool:
    """Whether the terminal on `fd` turns \\n into \\r\\n (ONLCR): a pty Docker's shim reads does;
    one runc relays to its own terminal does not (runc clears it, its terminal adds the \\r)."""
    try:
        return bool(termios.tcgetattr(fd)[1] & termios.ONLCR)
    except termios.error:
        return True
