"""Talking to the tiny guest inside a container: its console through a pseudo-terminal, its
fake SSH listener through the container's address."""

from __future__ import annotations

import socket
import time

import pexpect

from tests.container.docker import Container

TINY_BANNER = b"SSH-2.0-TINY-GUEST-LISTENER"


def console_answer(container: Container, timeout_s: float = 30) -> None:
    """`docker exec -it C virsh console vm` in a real pseudo-terminal gets a shell answer."""
    session = pexpect.spawn(f"{container.engine} exec -it {container.name} virsh console vm", timeout=timeout_s)
    try:
        session.expect("Escape character")
        # the guest's shell prompt may have been printed long ago: ask until it answers
        deadline = time.monotonic() + timeout_s
        while True:
            session.sendline("echo ANSWER-$((6*7))")
            try:
                session.expect("ANSWER-42", timeout=3)
                break
            except pexpect.TIMEOUT:
                assert time.monotonic() < deadline, "the guest's shell did not answer on the console"
        session.sendcontrol("]")
        session.expect(pexpect.EOF, timeout=10)
    finally:
        session.close(force=True)


def banner(address: str, port: int = 22) -> bytes:
    try:
        with socket.create_connection((address, port), timeout=3) as connection:
            connection.settimeout(3)
            return connection.recv(64)
    except OSError:
        return b""
