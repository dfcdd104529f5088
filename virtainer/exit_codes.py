"""Exit statuses of the command-line front ends: `virtainer`, the container's entrypoint, `runtime
install`. The one table from an error's kind to the status a command exits with.

0 success, 1 runtime failure, 2 invalid input (nothing was created or changed), 3 timeout
(readiness, or a graceful stop that had to destroy), 4 conflict (wrong state, diff in use),
5 not found.
"""

from __future__ import annotations

from virtainer.errors import ErrorKind, VirtainerError

EXIT_OK = 0
EXIT_RUNTIME = 1  # something failed while doing what was asked
EXIT_CONFIG = 2  # the request itself was invalid; nothing was created or changed
EXIT_TIMEOUT = 3  # a wait reached its deadline (readiness, graceful stop)
EXIT_CONFLICT = 4  # the object is in a state that forbids the operation (locked, wrong state)
EXIT_NOT_FOUND = 5  # the named VM, snapshot or file does not exist

EXIT_STATUS: dict[ErrorKind, int] = {
    ErrorKind.FAILED: EXIT_RUNTIME,
    ErrorKind.INVALID: EXIT_CONFIG,
    ErrorKind.BASE_MISMATCH: EXIT_CONFIG,  # the image given does not fit the diff: fix the input
    ErrorKind.NOT_FOUND: EXIT_NOT_FOUND,
    ErrorKind.CONFLICT: EXIT_CONFLICT,
    ErrorKind.TIMEOUT: EXIT_TIMEOUT,
    ErrorKind.UNAUTHORIZED: EXIT_RUNTIME,
    ErrorKind.UNAVAILABLE: EXIT_RUNTIME,
    ErrorKind.IMAGE: EXIT_RUNTIME,
    ErrorKind.HYPERVISOR: EXIT_RUNTIME,
}


def exit_status(error: VirtainerError) -> int:
    return EXIT_STATUS[error.kind]
