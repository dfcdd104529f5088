#!/usr/bin/python3
"""The virtainer image's main process (PID 1 is tini, which reaps and forwards signals).

Deliberately thin: all logic lives in virtainer.controller, where it is tested.
"""

import os
import sys


def run() -> int:
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
