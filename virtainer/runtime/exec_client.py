"""`docker exec` into the VM: the process runc starts in the container for each exec.

The runtime rewrote the exec's process into this client (the original is in VIRTAINER_EXEC). It asks
the launcher (EXEC_SOCKET) to run the original in the VM, then relays: our stdin in, the command's
stdout and stderr out on our own fds, and its exit status as ours. Lines on the socket:
  client -> launcher  the spec (one JSON line), "in HEX", "ineof", "kill SIG", "size ROWS COLS"
  launcher -> client  "out HEX", "err HEX", "done STATUS"
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import termios
import threading
import tty
from types import FrameType

from virtainer.runtime.plan import EXEC_SOCKET
from virtainer.runtime.stdio import is_dev_null, terminal_maps_newlines

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class Client:
    def __init__(self, spec: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(EXEC_SOCKET)
        self.lock = threading.Lock()
        self.send(spec)

    def send(self, line: str) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(line.encode() + b"\n")

    def pump_stdin(self) -> None:
        try:
            while data := os.read(0, 32768):
                self.send(f"in {data.hex()}")
        except OSError:
            pass
        self.send("ineof")

    def window_size(self) -> None:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(0)
            self.send(f"size {size.lines} {size.columns}")

    def relay_output(self) -> int:
        buffered = b""
        while data := self.sock.recv(1 << 17):
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                kind, _, rest = line.decode().partition(" ")
                if kind in ("out", "err"):
                    _write_all(1 if kind == "out" else 2, bytes.fromhex(rest))
                elif kind == "done":
                    return int(rest)
        sys.stderr.write("virtainer: the VM went away during docker exec\n")
        return 255


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> int:
    spec = os.environ.get("VIRTAINER_EXEC", "")
    if not spec:
        sys.stderr.write("virtainer: exec client started without VIRTAINER_EXEC\n")
        return 126
    with_stdin = os.isatty(0) or not is_dev_null(0)
    try:
        request = {"process": json.loads(spec), "stdin": with_stdin, "onlcr": terminal_maps_newlines(0)}
        client = Client(json.dumps(request))
    except OSError as error:
        sys.stderr.write(f"virtainer: the container's VM is not running ({error})\n")
        return 126

    def forward(signum: int, _frame: FrameType | None) -> None:
        client.send(f"kill {signum}")

    for signum in FORWARDED:
        signal.signal(signum, forward)
    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        client.window_size()
        signal.signal(signal.SIGWINCH, lambda _s, _f: client.window_size())
    if with_stdin:
        threading.Thread(target=client.pump_stdin, daemon=True).start()
    try:
        return client.relay_output()
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    sys.exit(main())
