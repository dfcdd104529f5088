"""The OCI processes the runtime puts in a container: the launcher (`create`) and the exec client
(`exec`), and the guest's process read from an OCI one. Light on imports: the runtime's `exec` verb
(docker exec's first step) needs only this, not the rest of the bundle rewrite."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from virtainer.errors import VirtainerError
from virtainer.runtime.plan import CODE_DIR, STATE_DIR, Process

LAUNCHER = ["/usr/bin/tini", "-s", "--", "/usr/bin/python3", "-m", "virtainer.runtime.launcher"]
EXEC_CLIENT = ["/usr/bin/python3", "-m", "virtainer.runtime.exec_client"]
LAUNCHER_ENV = [
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    f"PYTHONPATH={CODE_DIR}",
    "PYTHONDONTWRITEBYTECODE=1",
    "HOME=/root",
    f"LIBVIRT_LOG_OUTPUTS=3:file:{STATE_DIR}/libvirt.log",  # libvirt's own chatter stays off stderr
]
# the launcher's capabilities whatever the bundle asks (runc's own `spec` template gives three):
# Docker's default set, plus NET_ADMIN (bridge + tap), SYS_ADMIN (virtiofsd's sandbox) and SYS_NICE
# (paging out QEMU's copy of the guest kernel, see qemu_memory). The command in the VM is not bound
# by them: there it is a process of the guest's own kernel.
LAUNCHER_CAPABILITIES = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
    "CAP_SETUID", "CAP_SYS_CHROOT", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_NICE",
)  # fmt: skip


class BundleError(VirtainerError):
    """The bundle cannot be run as a VM (missing command, too little memory...)."""


def process_from_oci(process: dict[str, Any], args: list[str]) -> Process:
    """An OCI process (config.json's or `docker exec`'s) as the guest runs it, with these args."""
    user = process.get("user") or {}
    size = process.get("consoleSize") or {}
    return Process(
        args=args,
        env=[str(entry) for entry in process.get("env") or []],
        cwd=str(process.get("cwd") or "/"),
        uid=int(user.get("uid", 0)),
        gid=int(user.get("gid", 0)),
        groups=[int(gid) for gid in user.get("additionalGids") or []],
        terminal=bool(process.get("terminal")),
        rows=int(size.get("height", 0)),
        cols=int(size.get("width", 0)),
    )


def exec_process(process: dict[str, Any]) -> dict[str, Any]:
    """`docker exec`'s process, rewritten: the exec client, with the original for the VM in its env."""
    args = [str(arg) for arg in process.get("args") or []]
    if not args:
        raise BundleError("exec: no command given")
    original = process_from_oci(process, args)
    new = launcher_process(process)
    new["args"] = [*EXEC_CLIENT]
    new["env"] = [*LAUNCHER_ENV, f"VIRTAINER_EXEC={json.dumps(asdict(original))}"]
    return new


def launcher_process(process: dict[str, Any]) -> dict[str, Any]:
    new: dict[str, Any] = {
        "terminal": bool(process.get("terminal")),
        "user": {"uid": 0, "gid": 0},
        "args": LAUNCHER,
        "env": LAUNCHER_ENV,
        "cwd": "/",
        "noNewPrivileges": True,
    }
    for key in ("consoleSize", "rlimits", "oomScoreAdj"):
        if key in process:
            new[key] = process[key]
    # root with one set for all of bounding/effective/permitted (Docker gives a non-root user only
    # a bounding set): the bundle's own plus what QEMU, virtiofsd and the network takeover need
    bounding = list((process.get("capabilities") or {}).get("bounding") or [])
    bounding += [cap for cap in LAUNCHER_CAPABILITIES if cap not in bounding]
    new["capabilities"] = {kind: list(bounding) for kind in ("bounding", "effective", "permitted")}
    return new
