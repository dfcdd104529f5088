"""What the agent says about the guest (OS, kernel, hostname, users, filesystems, interfaces)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from virtainer.guest.agent import _agent_needed, _patiently
from virtainer.hypervisor import Domain

T = TypeVar("T")


@dataclass(frozen=True)
class GuestUser:
    name: str
    domain: str = ""
    login_time: float | None = None  # Unix time


@dataclass(frozen=True)
class GuestFilesystem:
    mountpoint: str
    device: str
    fstype: str
    total_bytes: int | None
    used_bytes: int | None


@dataclass(frozen=True)
class GuestInterface:
    name: str
    mac: str
    addresses: tuple[str, ...]  # address/prefix, IPv4 and IPv6


@dataclass(frozen=True)
class GuestFacts:
    agent_version: str = ""
    os_id: str = ""
    os_name: str = ""
    os_version: str = ""
    os_version_id: str = ""
    os_pretty_name: str = ""
    kernel_release: str = ""
    kernel_version: str = ""
    machine: str = ""
    hostname: str = ""
    timezone: str = ""
    timezone_offset_s: int | None = None
    users: tuple[GuestUser, ...] = ()
    filesystems: tuple[GuestFilesystem, ...] = ()
    interfaces: tuple[GuestInterface, ...] = ()


def agent_version(dom: Domain, timeout_s: int = 5) -> str:
    reply = dom.agent_command({"execute": "guest-info"}, timeout_s)
    return str(reply.get("version", "")) if isinstance(reply, dict) else ""


def facts(dom: Domain, *, patient: bool = True) -> GuestFacts:
    """What the agent says about the guest: OS, kernel, hostname, users, filesystems, time zone,
    interfaces (libvirt's guestInfo), and the agent's version. Not patient: a busy agent fails
    at once (a status read must not wait)."""

    def ask(call: Callable[[], T]) -> T:
        return _patiently(call) if patient else call()

    with _agent_needed(dom, "guest facts"):
        version = ask(lambda: agent_version(dom))
        info = ask(lambda: dom.guest_info())
    return parse_guest_info(info, version)


def parse_guest_info(info: dict[str, Any], version: str = "") -> GuestFacts:
    """libvirt's flat typed parameters ("fs.0.mountpoint", ...) as dataclasses."""

    def text(key: str) -> str:
        return str(info.get(key, ""))

    def number(key: str) -> int | None:
        value = info.get(key)
        return int(value) if isinstance(value, int | float) else None

    def count(prefix: str) -> range:
        return range(number(f"{prefix}.count") or 0)

    users = tuple(
        GuestUser(
            text(f"user.{i}.name"), text(f"user.{i}.domain"),
            (login / 1000 if (login := number(f"user.{i}.login-time")) is not None else None),
        )
        for i in count("user")
    )  # fmt: skip
    filesystems = tuple(
        GuestFilesystem(
            text(f"fs.{i}.mountpoint"), text(f"fs.{i}.name"), text(f"fs.{i}.fstype"),
            number(f"fs.{i}.total-bytes"), number(f"fs.{i}.used-bytes"),
        )
        for i in count("fs")
    )  # fmt: skip
    interfaces = tuple(
        GuestInterface(
            text(f"if.{i}.name"), text(f"if.{i}.hwaddr"),
            tuple(f"{text(f'if.{i}.addr.{j}.addr')}/{text(f'if.{i}.addr.{j}.prefix')}" for j in count(f"if.{i}.addr")),
        )
        for i in count("if")
    )  # fmt: skip
    return GuestFacts(
        agent_version=version,
        os_id=text("os.id"),
        os_name=text("os.name"),
        os_version=text("os.version"),
        os_version_id=text("os.version-id"),
        os_pretty_name=text("os.pretty-name"),
        kernel_release=text("os.kernel-release"),
        kernel_version=text("os.kernel-version"),
        machine=text("os.machine"),
        hostname=text("hostname"),
        timezone=text("timezone.name"),
        timezone_offset_s=number("timezone.offset"),
        users=users,
        filesystems=filesystems,
        interfaces=interfaces,
    )
