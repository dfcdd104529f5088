"""Inside a running guest through the QEMU guest agent: exec, copy, SSH keys, passwords, facts.

No SSH or network is needed, only qemu-guest-agent in the guest. One module per concern:
`agent` (one call at a time, retried while busy; the refusal when there is no agent), `execute`
(commands with their output relayed), `files` (copy in and out), `accounts` (keys, passwords),
`facts` (what the agent reports), `ssh` (does the guest's SSH answer: the readiness wait asks it
too). `from virtainer import guest` gives all of it.
"""

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
from virtainer.guest.facts import (
    GuestFacts,
    GuestFilesystem,
    GuestInterface,
    GuestUser,
    agent_version,
    facts,
    parse_guest_info,
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
