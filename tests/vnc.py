"""A VNC client's first steps (RFB 3.8), over a real TCP connection: what a viewer sees first."""

from __future__ import annotations

import socket
import struct

RFB_VERSION = b"RFB 003.008\n"
SECURITY_NONE = 1


def _read(rfb: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = rfb.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"the VNC server closed the connection after {len(data)} of {size} bytes")
        data += chunk
    return data


def _security_types(rfb: socket.socket) -> tuple[bytes, list[int]]:
    version = _read(rfb, 12)
    rfb.sendall(RFB_VERSION)
    count = _read(rfb, 1)[0]
    return version, list(_read(rfb, count))


def rfb_security_types(port: int, host: str = "127.0.0.1") -> tuple[bytes, list[int]]:
    """The start of an RFB handshake: the server's version, our version, its security types."""
    with socket.create_connection((host, port), timeout=10) as rfb:
        return _security_types(rfb)


def rfb_desktop(port: int, host: str = "127.0.0.1") -> tuple[bytes, int, int]:
    """A whole handshake without a password, to the server's init: (version, width, height)."""
    with socket.create_connection((host, port), timeout=10) as rfb:
        version, types = _security_types(rfb)
        if SECURITY_NONE not in types:
            raise ConnectionError(f"the VNC server asks for security types {types}, not None")
        rfb.sendall(bytes([SECURITY_NONE]))
        if _read(rfb, 4) != bytes(4):
            raise ConnectionError("the VNC server refused the None security type")
        rfb.sendall(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", _read(rfb, 4))
        return version, width, height
