"""The guest's SSH server, seen from here: does it answer with an SSH banner?

Asked by the readiness wait (the ssh stage) and by the refusal of a guest without an agent (which
names SSH as the way in when it answers)."""

from __future__ import annotations

import socket

SSH_PORT = 22


def ssh_banner(address: str, port: int = SSH_PORT) -> str | None:
    """The server's banner (SSH-2.0-...) when one answers at address:port, else None."""
    try:
        with socket.create_connection((address, port), timeout=2) as connection:
            connection.settimeout(3)
            banner = connection.recv(64)
    except OSError:
        return None
    return banner.decode(errors="replace").strip() if banner.startswith(b"SSH-") else None
