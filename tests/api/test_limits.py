"""Limits on connections, requests, event streams and slow clients, each answered with its own
status in the API's error shape; /healthz keeps answering under 10k idle connections. Against a
real `virtainer serve` on the real libvirtd; no guest is needed."""

from __future__ import annotations

import contextlib
import resource
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ApiServer, serving
from tests.waiting import wait_until

TOKEN = "limits-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDLE_CONNECTIONS = 10_000


def open_files(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def accepted_connections(pid: int, port: int) -> int:
    """How many established TCP connections on `port` the process holds as open files, from the
    kernel's tables: no count taken before (a file the server opens or closes meanwhile, such as a
    lazy import, cannot make the number wrong)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().name
            if target.startswith("socket:["):
                held.add(target[len("socket:[") : -1])
    established = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            established += local_port == port and state == "01" and inode in held
    return established


def address(api: ApiServer) -> tuple[str, int]:
    host, port = api.url.removeprefix("http://").split(":")
    return host, int(port)


def answer_of(sock: socket.socket, timeout_s: float = 30) -> tuple[int, bytes]:
    """Read until the server closes the connection; the status and the body it sent."""
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


@contextlib.contextmanager
def idle_sockets(api: ApiServer, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that send nothing, held open until the block ends; returns once
    the server has accepted them all."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(address(api), timeout=30))
        port = address(api)[1]
        wait_until(
            lambda: accepted_connections(api.process.pid, port) >= count, 60, f"the server accepting {count} sockets"
        )
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    env = {
        "VIRTAINER_API_MAX_CONNECTIONS": "40", "VIRTAINER_API_MAX_REQUESTS": "3",
        "VIRTAINER_API_MAX_EVENT_STREAMS": "2", "VIRTAINER_API_HEADER_TIMEOUT": "3",
        "VIRTAINER_API_BODY_TIMEOUT": "3",
    }  # fmt: skip
    with serving(tmp_path_factory.mktemp("limits"), "vm", token=TOKEN, env=env) as api:
        yield api


def refusal(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_event_streams_beyond_the_limit_get_429_and_requests_beyond_theirs_503(limited: ApiServer) -> None:
    with contextlib.ExitStack() as streams, httpx.Client(base_url=limited.url, headers=AUTH, timeout=30) as http:
        readers = []  # kept: an abandoned iterator closes its stream
        for _ in range(2):
            stream = streams.enter_context(http.stream("GET", "/v1/events"))
            assert stream.status_code == 200
            readers.append(stream.iter_text())
            assert next(readers[-1]).startswith(": connected")  # the stream is being served
        refusal(http.get("/v1/events", timeout=20), 429, "too_many_streams")
        # two streams and one slow upload in progress: the next request is one too many
        slow = socket.create_connection(address(limited), timeout=30)
        head = f"POST /v1/vms/vm/snapshots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        slow.sendall((head + "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode())
        wait_until(lambda: http.get("/v1/vms").status_code == 503, 10, "the request limit to be reached")
        refusal(http.get("/v1/vms"), 503, "busy")
        assert http.get("/healthz").status_code == 200  # health is never limited by the gate
        assert answer_of(slow)[0] == 408  # the slow upload times out, and frees its place
        slow.close()
    with httpx.Client(base_url=limited.url, headers=AUTH, timeout=30) as http:
        wait_until(lambda: http.get("/v1/vms").status_code == 200, 10, "the places to be freed")
        with http.stream("GET", "/v1/events") as stream:
            assert stream.status_code == 200


def test_slow_headers_get_408(limited: ApiServer) -> None:
    sock = socket.create_connection(address(limited), timeout=30)
    sock.sendall(b"GET /v1/vms HTTP/1.1\r\nHost: x\r\nAuthor")
    started = time.monotonic()
    status, body = answer_of(sock)
    assert status == 408 and b'"timeout"' in body, body
    assert time.monotonic() - started >= 2  # the header timeout (3 s), not an immediate refusal


def test_a_connection_that_sends_nothing_gets_408(limited: ApiServer) -> None:
    sock = socket.create_connection(address(limited), timeout=30)
    status, body = answer_of(sock)
    assert status == 408 and b"headers did not arrive" in body, body


def test_slow_body_gets_408(limited: ApiServer) -> None:
    sock = socket.create_connection(address(limited), timeout=30)
    head = f"POST /v1/vms/vm/snapshots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    sock.sendall((head + "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode())
    status, body = answer_of(sock)
    assert status == 408 and b"body did not arrive" in body, body


def test_a_huge_head_gets_431(limited: ApiServer) -> None:
    sock = socket.create_connection(address(limited), timeout=30)
    with contextlib.suppress(OSError):  # the server may close while we still send
        sock.sendall(b"GET /v1/vms HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * (200 << 10) + b"\r\n\r\n")
    status, body = answer_of(sock)
    assert status == 431 and b'"head_too_large"' in body, body


def _answer_or_open(sock: socket.socket) -> int:
    """A refused connection got its 503 at once and was closed; an accepted one answers the
    /healthz it was sent (200) and stays open: peek at the status line, do not wait for a close."""
    with contextlib.suppress(OSError):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(30)
    return int(sock.recv(12, socket.MSG_PEEK).split(b" ")[1])


@pytest.fixture
def more_open_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files is {hard}; {wanted} are needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_healthz_answers_under_10k_idle_connections_and_more_than_the_limit_get_503(
    tmp_path: Path, more_open_files: None
) -> None:
    limit = IDLE_CONNECTIONS + 20
    env = {"VIRTAINER_API_HEADER_TIMEOUT": "300", "VIRTAINER_API_MAX_CONNECTIONS": str(limit)}
    with serving(tmp_path, "vm", token=TOKEN, env=env) as api, idle_sockets(api, IDLE_CONNECTIONS):
        with httpx.Client(base_url=api.url, headers=AUTH, timeout=10) as http:
            took = []
            for _ in range(5):
                started = time.monotonic()
                assert http.get("/healthz").status_code == 200
                assert http.get("/v1/vms").status_code == 200
                took.append(time.monotonic() - started)
        assert open_files(api.process.pid) >= IDLE_CONNECTIONS  # all still held by the server
        median = statistics.median(took)
        print(f"/healthz + GET /v1/vms under {IDLE_CONNECTIONS} idle connections: median {median:.3f} s")
        assert median < 1.0, took
        extra = [socket.create_connection(address(api), timeout=30) for _ in range(40)]
        statuses = [_answer_or_open(sock) for sock in extra]
        assert statuses.count(503) >= 15 and set(statuses) <= {200, 503}, statuses
        for sock in extra:
            sock.close()
