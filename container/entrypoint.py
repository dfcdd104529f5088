#!/usr/bin/python3
"""The virtainer image's main process (PID 1 is tini, which reaps and forwards signals).

Deliberately thin: all logic lives in virtainer.controller, where it is tested.
"""

import os
import sys


def manager_mode() -> bool:
    """VIRTAINER_MANAGER=1: no VM here; the page and API that manage the engine's VM containers
    (run with the engine's socket: -v /var/run/docker.sock:/var/run/docker.sock)."""
    return os.environ.get("VIRTAINER_MANAGER", "").strip().lower() in ("1", "true", "yes", "on")


def run() -> int:
    if manager_mode():
        from virtainer.cli import main as cli

        return cli(["serve", "--docker", "--listen", os.environ.get("VIRTAINER_API_LISTEN") or "0.0.0.0"])
    try:
        from virtainer.controller import main
    except Exception as error:
        if os.environ.get("VIRTAINER_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
            raise
        sys.stderr.write(f"virtainer: error: cannot load the controller: {type(error).__name__}: {error}\n")
        return 1
    return main()


if __name__ == "__main__":
    sys.exit(run())
