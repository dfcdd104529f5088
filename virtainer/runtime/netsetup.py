"""The VM takes over the container's network: filled in below."""

from __future__ import annotations

from virtainer.runtime.vm import Nic


def take_over_network() -> list[Nic]:
    return []
