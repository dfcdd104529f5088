"""What the guest reaches at the host link, in the container: Docker's resolver, over UDP (asked
by the supervisor for the guest's queries on the control port) and over TCP (carried connections).

HOST_LINK is a link-local /32 on eth0's bridge (netsetup puts it there). Light on imports, apart
from netsetup's `ip` calls: the supervisor, which stays in memory while the VM runs, needs only this.
"""

from __future__ import annotations

import contextlib
import socket
import threading

# Docker's embedded resolver on user-defined networks: only in the container's network namespace
DOCKER_DNS = ("127.0.0.11", 53)
DNS_TIMEOUT_S = 5.0
DOCKER_DNS_WAIT_S = 2.0  # then the guest asks the upstream servers (a client's first try lasts 5 s)
DNS_MAX_BYTES = 4096
HOST_LINK = "169.254.77.1"  # link-local: no Docker network uses it; answers only on eth0's bridge
FORWARD_CONNECTIONS = 16  # host-link connections carried at once (VNC viewers, DNS over TCP)


def forward_tcp(port: int, target: tuple[str, int]) -> None:
    """Carry connections to HOST_LINK:port to target, in threads (the listener is bound on return)."""
    server = socket.create_server((HOST_LINK, port), backlog=FORWARD_CONNECTIONS)
    slots = threading.BoundedSemaphore(FORWARD_CONNECTIONS)

    def serve() -> None:
        while True:
            client, _ = server.accept()
            if not slots.acquire(blocking=False):
                client.close()
                continue
            threading.Thread(target=_carry, args=(client, target, slots), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def _carry(client: socket.socket, target: tuple[str, int], slots: threading.BoundedSemaphore) -> None:
    try:
        with client, socket.create_connection(target, timeout=DNS_TIMEOUT_S) as upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
            back.start()
            _copy(client, upstream)
            back.join()
    except OSError:
        pass
    finally:
        slots.release()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def ask_docker_dns(query: bytes) -> bytes:
    """One DNS query, over UDP, to Docker's resolver in this namespace; its answer (OSError if none
    within DOCKER_DNS_WAIT_S: it answers its own names at once, and never the names it forwards)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DOCKER_DNS_WAIT_S)
        sock.connect(DOCKER_DNS)
        sock.send(query[:DNS_MAX_BYTES])
        return sock.recv(DNS_MAX_BYTES)
