"""Many VMs at once: each source is a virtainer API (a container's, a host's `virtainer serve`),
asked in parallel for its VMs. No central database: the fleet is whatever answers now.

Used by `virtainer status --api URL ...` / `--fleet FILE` / `--docker` and by `GET /v1/fleet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from virtainer import operations
from virtainer.api.client import RemoteClient
from virtainer.api.models import Model, VmPublic, vm_public
from virtainer.errors import VirtainerError

MAX_PARALLEL = 16


@dataclass(frozen=True)
class Source:
    label: str  # what the table shows: a container's name, or the URL
    url: str
    token: str | None = None


@dataclass(frozen=True)
class Member:
    """What one source answered: its VMs, or why it could not tell."""

    source: str
    url: str
    vms: list[operations.VmStatus]
    error: str | None = None


class FleetMember(Model):
    """A member in the API's shape (GET /v1/fleet, `status --json` over a fleet)."""

    source: str
    url: str
    vms: list[VmPublic]
    error: str | None = None


def member_public(member: Member) -> FleetMember:
    vms = [vm_public(vm) for vm in member.vms]
    return FleetMember(source=member.source, url=member.url, vms=vms, error=member.error)


def ask(source: Source, timeout_s: float) -> Member:
    client = RemoteClient(source.url, source.token, timeout_s=timeout_s)
    try:
        return Member(source.label, source.url, client.list_vms())
    except VirtainerError as error:
        return Member(source.label, source.url, [], str(error))
    except ValueError as error:  # not JSON, or not a virtainer API's VM list
        first = str(error).splitlines()[0]
        return Member(source.label, source.url, [], f"not a virtainer API: {first}")
    finally:
        client.close()


def gather(sources: Sequence[Source], timeout_s: float = 30.0) -> list[Member]:
    """Every source's VMs, in the order given; an unreachable source has its error instead."""
    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(sources))) as pool:
        return list(pool.map(lambda source: ask(source, timeout_s), sources))
