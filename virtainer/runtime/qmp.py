"""QEMU's QMP monitor, taken over from libvirt once the VM exists: resume it, learn of its
power-off, end it. Line-delimited JSON on the monitor socket libvirt made (QEMU serves the next
client once libvirt's connection is gone). QEMU runs with -no-shutdown (libvirt's choice), so a
guest's power-off pauses it with a SHUTDOWN event rather than ending it."""

from __future__ import annotations

import json
import queue
import socket
import threading
from pathlib import Path


class MonitorError(OSError):
    pass


class Monitor:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        self.stopped = threading.Event()  # the guest powered off (or QEMU is gone)
        self.replies: queue.Queue[dict[str, object] | None] = queue.Queue()
        self.lock = threading.Lock()
        self._message()  # the greeting
        self._send("qmp_capabilities")
        self._message()
        threading.Thread(target=self._read, daemon=True).start()

    def _message(self) -> dict[str, object]:
        line = self.reader.readline()
        if not line:
            raise MonitorError("QEMU's monitor closed")
        message: dict[str, object] = json.loads(line)
        return message

    def _send(self, command: str) -> None:
        self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")

    def _read(self) -> None:
        try:
            while True:
                message = self._message()
                if message.get("event") == "SHUTDOWN":
                    self.stopped.set()
                elif "event" not in message:
                    self.replies.put(message)
        except (OSError, ValueError):
            pass
        self.stopped.set()
        self.replies.put(None)

    def execute(self, command: str, timeout_s: float = 30.0) -> None:
        with self.lock:
            self._send(command)
            try:
                reply = self.replies.get(timeout=timeout_s)
            except queue.Empty:
                reply = None
        if reply is None or "error" in reply:
            raise MonitorError(f"QEMU's monitor: {command} failed: {reply}")
