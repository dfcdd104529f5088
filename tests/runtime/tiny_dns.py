"""A DNS server for the tests (UDP, A records only): what a user's own --dns server would be."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

A, IN = 1, 1
NXDOMAIN = 3


@dataclass
class TinyDns:
    """Answers A queries for the names in `records`; other names get NXDOMAIN, other types of
    those names an empty answer. `clients` has the address of every query's sender."""

    records: dict[str, str]
    clients: list[str] = field(default_factory=list)

    def answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        query_id, flags = struct.unpack(">HH", query[:4])
        name, end = _question_name(query, 12)
        if end + 4 > len(query):
            return None
        qtype, qclass = struct.unpack(">HH", query[end : end + 4])
        known = name.lower() in self.records
        rcode = 0 if known else NXDOMAIN
        answers = b""
        if known and (qtype, qclass) == (A, IN):
            address = socket.inet_aton(self.records[name.lower()])
            answers = struct.pack(">HHHIH", 0xC00C, A, IN, 60, 4) + address  # a pointer to the question's name
        header = struct.pack(">HHHHHH", query_id, 0x8180 | (flags & 0x0100) | rcode, 1, 1 if answers else 0, 0, 0)
        return header + query[12 : end + 4] + answers

    def serve(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                query, client = sock.recvfrom(512)
            except TimeoutError:
                continue
            self.clients.append(client[0])
            reply = self.answer(query)
            if reply is not None:
                sock.sendto(reply, client)


def _question_name(message: bytes, offset: int) -> tuple[str, int]:
    labels = []
    while offset < len(message) and message[offset]:
        length = message[offset]
        labels.append(message[offset + 1 : offset + 1 + length].decode(errors="replace"))
        offset += 1 + length
    return ".".join(labels), offset + 1


@contextlib.contextmanager
def tiny_dns(address: str, records: dict[str, str]) -> Iterator[TinyDns]:
    """TinyDns on address:53/udp (a host address of the test's own: no other server holds it)."""
    server = TinyDns(records)
    stop = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 53))
        sock.settimeout(0.2)
        thread = threading.Thread(target=server.serve, args=(sock, stop), daemon=True)
        thread.start()
        try:
            yield server
        finally:
            stop.set()
            thread.join()
