"""Manager mode's checks of what the page asks for: refused before the engine is touched."""

from __future__ import annotations

import pytest

from virtainer.errors import ConfigError
from virtainer.orchestration.engine import NewContainer, check_new, parse_env_lines, parse_ports


def test_ports_in_docker_run_form() -> None:
    assert parse_ports("2222:22 127.0.0.1:8080:80, :53/udp") == {
        "22/tcp": 2222, "80/tcp": ("127.0.0.1", 8080), "53/udp": None,
    }  # fmt: skip
    assert parse_ports("") == {}


@pytest.mark.parametrize("ports", ["22", "abc", "70000:22", "2222:0", "1.2.3:22:22", "22:22/sctp"])
def test_bad_ports_are_one_line_naming_the_setting(ports: str) -> None:
    with pytest.raises(ConfigError, match="ports"):
        parse_ports(ports)


def test_extra_settings_are_the_container_s_own() -> None:
    assert parse_env_lines("# a comment\nVIRTAINER_WAIT_FOR=running\n\nIMAGE_URL=http://x/a=b\n") == {
        "VIRTAINER_WAIT_FOR": "running", "IMAGE_URL": "http://x/a=b",
    }  # fmt: skip
    for line in ("NOT_A_SETTING=1", "VIRTAINER_MANAGER=1", "no equals sign"):
        with pytest.raises(ConfigError, match="environment"):
            parse_env_lines(line)


def test_the_request_becomes_the_container_s_environment() -> None:
    request = NewContainer("vm1", "virtainer/debian", memory_mib=512, cpus=1, ssh_key=" ssh-ed25519 AAAA k ",
                           network=False, env="VIRTAINER_STOP_TIMEOUT=30")  # fmt: skip
    assert request.run_environment() == {
        "RAM": "512", "CPU": "1", "VIRTAINER_SSH_KEYS": "ssh-ed25519 AAAA k", "VIRTAINER_NETWORK": "none",
        "VIRTAINER_STOP_TIMEOUT": "30",
    }  # fmt: skip
    assert request.volume_name == "vm1-disk"
    assert NewContainer("vm1", "i", volume="shared").volume_name == "shared"


@pytest.mark.parametrize(
    ("field", "request_"),
    [
        ("name", NewContainer("-bad", "virtainer/debian")),
        ("name", NewContainer("a b", "virtainer/debian")),
        ("volume", NewContainer("ok", "virtainer/debian", volume="../x")),
        ("image", NewContainer("ok", "")),
        ("image", NewContainer("ok", "two words")),
        ("memory", NewContainer("ok", "i", memory_mib=10)),
        ("cpus", NewContainer("ok", "i", cpus=0)),
    ],
)
def test_bad_requests_are_refused(field: str, request_: NewContainer) -> None:
    with pytest.raises(ConfigError, match=field):
        check_new(request_)
