"""The API refuses before it reads: the token is judged from the headers alone, bodies are capped
while they stream, every route but health needs the token (reads included) unless public reads
are switched on. Against a real `virtainer serve` on the real libvirtd; no guest is needed."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ApiServer, serving

BIG = 64 << 20
TOKEN = "gate-test-token-0123456789"
READ_ROUTES = ["/v1/vms", "/v1/vms/vm", "/v1/vms/vm/snapshots", "/v1/vms/vm/snapshots/s1", "/v1/events",
               "/openapi.json", "/docs", "/redoc"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with serving(tmp_path_factory.mktemp("gate"), "vm", token=TOKEN) as api:
        yield api


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most the process ever had resident (a buffered body cannot hide from it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def raw_request(url: str, head: str, body_size: int, *, chunked: bool = False) -> tuple[int, bytes]:
    """Send the head, then stream body_size zero bytes from a thread (the server may stop
    reading at any point); returns the status and body of what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(head.encode())

    def stream_body() -> None:
        chunk = bytes(1 << 16)
        with contextlib.suppress(OSError):
            for _ in range(body_size // len(chunk)):
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")

    sender = threading.Thread(target=stream_body, daemon=True)
    sender.start()
    answer = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    sock.close()
    sender.join(60)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer.partition(b"\r\n\r\n")[2]


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_unauthenticated_64_mib_body_is_refused_before_it_is_read(server: ApiServer) -> None:
    before = peak_rss_kib(server.process.pid)
    head = (
        f"POST /v1/vms/vm/snapshots HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BIG}\r\n\r\n"
    )
    status, body = raw_request(server.url, head, BIG)
    assert status == 401, body
    assert b'"unauthorized"' in body
    grown = peak_rss_kib(server.process.pid) - before
    assert grown < 16 << 10, f"the server's peak RSS grew by {grown} KiB for a refused body"


def test_authenticated_bodies_are_capped_while_they_stream(server: ApiServer) -> None:
    before = peak_rss_kib(server.process.pid)
    common = f"POST /v1/vms/vm/snapshots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    declared = common + f"Content-Type: application/json\r\nContent-Length: {BIG}\r\n\r\n"
    status, body = raw_request(server.url, declared, BIG)
    assert status == 413 and b'"body_too_large"' in body, body
    chunked = common + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, body = raw_request(server.url, chunked, BIG, chunked=True)
    assert status == 413 and b'"body_too_large"' in body, body
    grown = peak_rss_kib(server.process.pid) - before
    assert grown < 16 << 10, f"the server's peak RSS grew by {grown} KiB for capped bodies"


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
def test_every_read_needs_the_token(server: ApiServer, token: str | None) -> None:
    with server.client(token=token, timeout=30) as http:
        for path in READ_ROUTES:
            response = http.get(path)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
        assert http.get("/healthz").status_code == 200


def test_reads_answer_with_the_token(server: ApiServer) -> None:
    with server.client(timeout=30) as http:
        assert http.get("/v1/vms").status_code == 200
        assert http.get("/openapi.json").json()["info"]["title"] == "virtainer"
        assert http.get("/v1/vms/vm").json()["error"]["code"] == "not_found"  # past the gate


def test_public_reads_open_the_reads_and_nothing_else(tmp_path: Path) -> None:
    public = {"VIRTAINER_API_PUBLIC_READS": "1"}
    with serving(tmp_path, "vm", token=TOKEN, env=public) as api, api.client(token=None, timeout=30) as http:
        assert http.get("/v1/vms").status_code == 200
        assert http.get("/openapi.json").status_code == 200
        refused = http.post("/v1/vms/vm/snapshots", json={"name": "s1"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"


def test_an_invalid_public_reads_value_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess

    from tests.api.conftest import VIRTAINER

    env = {"VIRTAINER_API_PUBLIC_READS": "maybe", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*VIRTAINER, "serve", "--port", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "VIRTAINER_API_PUBLIC_READS" in done.stderr
