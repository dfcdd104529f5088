"""A seam for fault-injection tests: die at a named step, as a power cut or SIGKILL would.

`VIRTAINER_TEST_CRASH_AT=STEP` makes the process SIGKILL itself when it reaches STEP (the step
names are the `crash_point` calls' arguments). Unset, as it always is outside tests, this does
nothing.
"""

from __future__ import annotations

import os
import signal

CRASH_AT_ENV = "VIRTAINER_TEST_CRASH_AT"


def crash_point(step: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
