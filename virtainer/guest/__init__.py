"""Inside a running guest through the QEMU guest agent: exec, copy, SSH keys, passwords, facts.

No SSH or network is needed, only qemu-guest-agent in the guest. One module per concern:
`agent` (one call at a time, retried while busy; the refusal when there is no agent), `execute`
(commands with their output relayed), `files` (copy in and out), `accounts` (keys, passwords),
`facts` (what the agent reports), `ssh` (does the guest's SSH answer: the readiness wait asks it
too). `from virtainer import guest` gives all of it; each module loads when a name of it is first
used (`up` waits on guest.ssh and the agent only: exec, files and accounts stay unloaded).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# facts first and eagerly: its module's name is also a function's, which must win over the module
from virtainer.guest.facts import (
    GuestFacts,
    GuestFilesystem,
    GuestInterface,
    GuestUser,
    agent_version,
    facts,
    parse_guest_info,
)

if TYPE_CHECKING:
    from virtainer.guest.accounts import add_keys, check_key, list_keys, remove_keys, set_password
    from virtainer.guest.agent import USER_NAME, fallback
    from virtainer.guest.execute import (
        CapturedExec,
        ExecRequest,
        ExecResult,
        OnOutput,
        OnProgress,
        Stream,
        run,
        run_captured,
    )
    from virtainer.guest.files import CopyResult, copy_in, copy_out, guest_path

__all__ = [
    "USER_NAME",
    "CapturedExec",
    "CopyResult",
    "ExecRequest",
    "ExecResult",
    "GuestFacts",
    "GuestFilesystem",
    "GuestInterface",
    "GuestUser",
    "OnOutput",
    "OnProgress",
    "Stream",
    "add_keys",
    "agent_version",
    "check_key",
    "copy_in",
    "copy_out",
    "facts",
    "fallback",
    "guest_path",
    "list_keys",
    "parse_guest_info",
    "remove_keys",
    "run",
    "run_captured",
    "set_password",
]

_HOMES = {
    "add_keys": "virtainer.guest.accounts",
    "check_key": "virtainer.guest.accounts",
    "list_keys": "virtainer.guest.accounts",
    "remove_keys": "virtainer.guest.accounts",
    "set_password": "virtainer.guest.accounts",
    "USER_NAME": "virtainer.guest.agent",
    "fallback": "virtainer.guest.agent",
    "CapturedExec": "virtainer.guest.execute",
    "ExecRequest": "virtainer.guest.execute",
    "ExecResult": "virtainer.guest.execute",
    "OnOutput": "virtainer.guest.execute",
    "OnProgress": "virtainer.guest.execute",
    "Stream": "virtainer.guest.execute",
    "run": "virtainer.guest.execute",
    "run_captured": "virtainer.guest.execute",
    "CopyResult": "virtainer.guest.files",
    "copy_in": "virtainer.guest.files",
    "copy_out": "virtainer.guest.files",
    "guest_path": "virtainer.guest.files",
}


def __getattr__(name: str) -> object:
    """A name of the package, from its module, imported on first use and kept."""
    try:
        home = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
