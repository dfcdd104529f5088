#!/usr/bin/python3
"""The virtainer image's main process (PID 1 is tini, which reaps and forwards signals).

Deliberately thin: all logic lives in virtainer.controller, where it is tested.
"""

import sys

from virtainer.controller import main

if __name__ == "__main__":
    sys.exit(main())
