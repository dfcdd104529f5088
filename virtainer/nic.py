"""The NIC's MAC address, decided in one place: a guest OS never sees a new NIC at a new path.

Per start, in this order: the `mac` setting; else the MAC recorded beside the diff; else, for a
diff made before MACs were recorded, the one derived from its path (what its guest has seen so
far); else a new random one. `up` records it beside the diff when none is recorded yet, so a
copied or remounted diff keeps its NIC.
"""

from __future__ import annotations

import hashlib
import json
import secrets

from virtainer.errors import ImageError
from virtainer.files import write_atomic
from virtainer.spec import VmSpec, spec_with

MAC_PREFIX = "52:54:00:"  # QEMU's own range


def default_mac(spec: VmSpec) -> str:
    """A MAC derived from the diff's path: what diffs made before MACs were recorded have seen."""
    digest = hashlib.sha256(str(spec.diff_path).encode()).digest()
    return MAC_PREFIX + ":".join(f"{byte:02x}" for byte in digest[:3])


def random_mac() -> str:
    return MAC_PREFIX + ":".join(f"{byte:02x}" for byte in secrets.token_bytes(3))


def nic_mac(spec: VmSpec) -> str:
    """The NIC's MAC for this start (see the module's docstring)."""
    if spec.mac_address:
        return spec.mac_address
    saved = saved_mac(spec)
    if saved:
        return saved
    if spec.diff_path.exists():
        return default_mac(spec)
    return random_mac()


def with_nic_mac(spec: VmSpec) -> VmSpec:
    """The spec with its NIC's MAC decided (call once per start: a new MAC is random)."""
    if spec.network.mode == "none" or spec.mac_address:
        return spec
    return spec_with(spec, mac_address=nic_mac(spec))


def saved_mac(spec: VmSpec) -> str | None:
    """The MAC recorded beside the diff, None when none is recorded yet."""
    try:
        mac = json.loads(spec.nic_record_path.read_text())["mac"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ImageError(f"cannot read {spec.nic_record_path}: {error}") from None
    return str(mac)


def save_mac(spec: VmSpec, mac: str) -> bool:
    """Record the NIC's MAC beside the diff unless one is recorded. True when written."""
    if spec.nic_record_path.exists():
        return False
    write_atomic(spec.nic_record_path, json.dumps({"mac": mac}) + "\n", mode=0o644)
    return True
