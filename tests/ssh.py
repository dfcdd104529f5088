"""A real SSH client for tests: a throw-away key pair and `ssh` with batch options."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SSH_OPTIONS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
]  # fmt: skip


@dataclass(frozen=True)
class SshKey:
    private: Path

    @property
    def public(self) -> Path:
        return self.private.with_suffix(".pub")

    def run(
        self, target: str, command: str, *, port: int = 22, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-i", str(self.private), "-p", str(port), *SSH_OPTIONS, target, command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


def make_key(directory: Path) -> SshKey:
    private = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "virtainer-test", "-f", str(private)], check=True
    )
    return SshKey(private)
