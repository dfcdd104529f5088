"""Container-name DNS on a user-defined network: Docker's embedded resolver (127.0.0.11, in the
container's network namespace) answers the VM's queries, carried by the guest init and the launcher."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.container.docker import docker
from tests.runtime.common import VM_TIMEOUT_S, removed_after, run, unique
from tests.waiting import wait_until

pytestmark = pytest.mark.runtime
SERVE = "mkdir /www; echo hello-from-{name} > /www/index.html; exec httpd -f -p 80 -h /www"


@contextlib.contextmanager
def user_network() -> Iterator[str]:
    name = unique("net")
    docker("network", "create", name)
    try:
        yield name
    finally:
        docker("network", "rm", name, check=False)


def test_two_runtime_containers_reach_each_other_by_name(runtime: str, images: dict[str, str]) -> None:
    with user_network() as network, removed_after(unique("server")) as server:
        docker("run", "-d", f"--runtime={runtime}", "--network", network, "--name", server, images["busybox"],
               "sh", "-c", SERVE.format(name=server))  # fmt: skip

        def serving() -> bool:
            done = docker("exec", server, "wget", "-qO-", "http://127.0.0.1/", check=False, timeout=VM_TIMEOUT_S)
            return done.returncode == 0

        wait_until(serving, VM_TIMEOUT_S, "the server VM's httpd")
        script = f"grep -c '^nameserver 127.0.0.11$' /etc/resolv.conf; wget -qO- http://{server}/"
        done = run("--network", network, images["busybox"], "sh", "-c", script, runtime=runtime)
        assert (done.stdout, done.returncode) == (f"1\nhello-from-{server}\n", 0), done.stderr
