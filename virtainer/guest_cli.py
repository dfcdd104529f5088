"""CLI commands inside the guest: `exec`, `cp`, `keys`, `password`, `ssh` (a thin layer over
virtainer.guest). Every one takes the VM name first, `vm` by default (the container's VM)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from virtainer import guest
from virtainer.domain_model import parse_domain
from virtainer.errors import AgentUnavailableError, ConfigError, NotFoundError
from virtainer.exit_codes import EXIT_OK
from virtainer.hypervisor import DEFAULT_URI, Domain, Hypervisor
from virtainer.validators import NAME_TEXT

Command = Callable[[argparse.Namespace], int]
Reporter = Callable[[str, int, int | None], None]
NAME_OR_PATH = re.compile(f"({NAME_TEXT}):(/.*)")  # used with fullmatch only
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], progress: Reporter
) -> dict[str, Command]:
    """Add the subcommands; `progress(label, done, total)` draws transfers (the CLI's bar)."""
    run = commands.add_parser("exec", help="run a command in the guest through its agent: exec NAME -- CMD ARGS")
    run.add_argument("name", nargs="?", default="vm", help="VM name (default vm)")
    run.add_argument("-u", "--user", help="run as this guest user (default root)")
    run.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE", help="repeatable")
    run.add_argument("-w", "--workdir", help="working directory in the guest")
    run.add_argument("-t", "--timeout", type=float, help="seconds; the command is killed in the guest then")
    run.add_argument("-i", "--interactive", action="store_true", help="pass stdin to the command")

    copy = commands.add_parser("cp", help="copy files or directories: cp SRC NAME:/path, cp NAME:/path DEST")
    copy.add_argument("source")
    copy.add_argument("destination")
    copy.add_argument("-u", "--user", help="guest user that reads or owns the files (default root)")

    keys = commands.add_parser("keys", help="SSH authorized keys of a guest user: list, add, remove")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for action, text in (("list", "list the keys"), ("add", "append keys"), ("remove", "remove keys")):
        parser = actions.add_parser(action, help=text)
        if action == "list":
            parser.add_argument("name", nargs="?", default="vm", help="VM name (default vm)")
        else:  # [NAME] KEY...: with one argument it is the key, and the VM is `vm`
            parser.add_argument("keys", nargs="+", metavar="[NAME] KEY", help="public keys, or .pub files")
        parser.add_argument("--user", help="guest user (default the VM's cloud-init user)")

    password = commands.add_parser("password", help="set a guest user's password (random, printed once)")
    password.add_argument("name", nargs="?", default="vm", help="VM name (default vm)")
    password.add_argument("--user", help="guest user (default the VM's cloud-init user)")
    password.add_argument("--stdin", action="store_true", help="read the password from stdin instead")

    ssh = commands.add_parser("ssh", help="SSH into the guest with the right user, address and key")
    ssh.add_argument("name", nargs="?", default="vm", help="VM name (default vm)")
    ssh.add_argument("-l", "--user", help="guest user (default the VM's cloud-init user)")
    ssh.add_argument("-i", "--identity", type=Path, help="private key (default virtainer's own, added by the agent)")

    def cp(args: argparse.Namespace) -> int:
        return cmd_cp(args, progress)

    return {"exec": cmd_exec, "cp": cp, "keys": cmd_keys, "password": cmd_password, "ssh": cmd_ssh}


def _hypervisor(args: argparse.Namespace) -> Hypervisor:
    return Hypervisor(args.connect or DEFAULT_URI)


# ---------------------------------------------------------------------------------------------
# exec


def cmd_exec(args: argparse.Namespace) -> int:
    request = guest.ExecRequest(
        tuple(args.argv), user=args.user, env=tuple(args.env), timeout_s=args.timeout, workdir=args.workdir
    )
    stdout, stderr = sys.stdout.buffer, sys.stderr.buffer

    def relay(stream: guest.Stream, data: bytes) -> None:
        target = stdout if stream == "stdout" else stderr
        target.write(data)
        target.flush()

    with _hypervisor(args) as hv:
        dom = hv.domain(args.name)
        if args.interactive:
            with tempfile.TemporaryFile() as spooled:  # stdin reaches the guest before the command starts
                shutil.copyfileobj(sys.stdin.buffer, spooled)
                spooled.seek(0)
                result = guest.run(dom, request, relay, stdin=spooled)
        else:
            result = guest.run(dom, request, relay)
    if result.timed_out:
        sys.stderr.write(f"virtainer: the command ran past --timeout {args.timeout:g} s and was killed in the guest\n")
    return result.exit_code


# ---------------------------------------------------------------------------------------------
# cp


def cmd_cp(args: argparse.Namespace, progress: Reporter) -> int:
    source, destination = _vm_path(args.source), _vm_path(args.destination)
    if (source is None) == (destination is None):
        raise ConfigError(
            "cp", f"{args.source} {args.destination}", "one side NAME:/path in the guest, the other a host path"
        )

    def report(done: int, total: int | None) -> None:
        progress("copy", done, total)

    with _hypervisor(args) as hv:
        if destination is not None:
            dom = hv.domain(destination[0])
            result = guest.copy_in(dom, Path(args.source), destination[1], user=args.user, on_progress=report)
        else:
            assert source is not None
            dom = hv.domain(source[0])
            result = guest.copy_out(dom, source[1], Path(args.destination), user=args.user, on_progress=report)
    sys.stdout.write(
        f"copied {result.source} -> {result.destination} ({result.bytes} bytes, {result.elapsed_s:.1f} s)\n"
    )
    return EXIT_OK


def _vm_path(value: str) -> tuple[str, str] | None:
    match = NAME_OR_PATH.fullmatch(value)  # match() and `$` would let "vm:/p\n" through
    return (match.group(1), match.group(2)) if match else None


# ---------------------------------------------------------------------------------------------
# keys, password


def _user_of(dom: Domain, user: str | None) -> str:
    return user or dom.metadata().get("user") or "root"


def _key_texts(items: list[str]) -> list[str]:
    """Each KEY is a key itself, or a file of keys (one a line, # comments)."""
    keys: list[str] = []
    for item in items:
        path = Path(item)
        if not item.startswith(("ssh-", "ecdsa-", "sk-")) and path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            keys += [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        else:
            keys.append(item)
    return keys


def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command != "list":
        args.name, args.keys = (args.keys[0], args.keys[1:]) if len(args.keys) > 1 else ("vm", args.keys)
    with _hypervisor(args) as hv:
        dom = hv.domain(args.name)
        user = _user_of(dom, args.user)
        if args.keys_command == "list":
            present = guest.list_keys(dom, user)
        elif args.keys_command == "add":
            present = guest.add_keys(dom, user, _key_texts(args.keys))
        else:
            present = guest.remove_keys(dom, user, _key_texts(args.keys))
    if args.keys_command != "list":
        sys.stderr.write(f"{user}@{args.name} now has {len(present)} authorized key(s)\n")
    sys.stdout.write("".join(f"{key}\n" for key in present))
    return EXIT_OK


def cmd_password(args: argparse.Namespace) -> int:
    given = sys.stdin.readline().rstrip("\n") if args.stdin else None
    with _hypervisor(args) as hv:
        dom = hv.domain(args.name)
        user = _user_of(dom, args.user)
        password = guest.set_password(dom, user, given)
    if given is None:
        sys.stdout.write(f"password for {user}@{args.name} (shown once): {password}\n")
    else:
        sys.stdout.write(f"password for {user}@{args.name} set\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# ssh


def own_key() -> Path:
    """virtainer's own SSH key of this user (made once), which `ssh` adds to the guest by agent."""
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share")
    private = data / "virtainer" / "ssh" / "id_ed25519"
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "virtainer", "-f", str(private)]
        subprocess.run(command, check=True, capture_output=True)
    return private


def ssh_endpoint(dom: Domain) -> tuple[str, int]:
    """The guest's address (lease, agent, ARP), or with user-mode networking the host port
    forwarded to its port 22."""
    addresses = dom.addresses()
    if addresses:
        return addresses[0].address, 22
    forwarded = parse_domain(dom.xml()).forwarded_port(22)
    if forwarded:
        return "127.0.0.1", forwarded
    raise AgentUnavailableError(
        f"VM '{dom.name}' has no address to SSH to and no forwarded SSH port",
        hint=f"use the serial console (virtainer console {dom.name})",
    )


def cmd_ssh(args: argparse.Namespace) -> int:
    if shutil.which("ssh") is None:
        raise NotFoundError("no ssh client here", hint="install openssh-client, or use virtainer exec")
    with _hypervisor(args) as hv:
        dom = hv.domain(args.name)
        user = _user_of(dom, args.user)
        address, port = ssh_endpoint(dom)
        identity = args.identity
        if identity is None:
            identity = own_key()
            try:
                guest.add_keys(dom, user, [identity.with_suffix(".pub").read_text()])
            except AgentUnavailableError:
                identity = None  # no agent: the user's own keys, as plain ssh would use them
    command = ["ssh", *SSH_OPTIONS, "-p", str(port)]
    command += ["-i", str(identity)] if identity else []
    command += [f"{user}@{address}", *args.argv]
    sys.stdout.flush()
    os.execvp("ssh", command)
