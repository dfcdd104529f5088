#!/usr/bin/env bash
# The fast tier: no root, no daemon, no guest, ~35 s of CPU. Pure logic, then the core's
# operations and the REST API (FastAPI's TestClient) on libvirt's in-process test driver
# (test:///default). The full suite (scripts/test.sh) runs these same tests once, with the rest.
#   scripts/test-fast.sh [pytest options]       (.venv comes from `sudo scripts/setup-host.sh`, once)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/pytest ]; then
  echo "test-fast: no .venv here: run 'sudo scripts/setup-host.sh' once (it installs the packages and the venv)" >&2
  exit 2
fi
started=$EPOCHREALTIME
status=0
# no cache in the tree: a read-only checkout (another user's) runs all the same. The spec fuzzing
# tries every setting through every channel with 4 examples each (the full suite: 20); the
# schemathesis plugin (tests/api) is not loaded.
VIRTAINER_FUZZ_EXAMPLES=${VIRTAINER_FUZZ_EXAMPLES:-4} .venv/bin/pytest -q -p no:cacheprovider -p no:schemathesis tests/unit "$@" || status=$?
awk -v from="$started" -v to="$EPOCHREALTIME" -v user="$(id -un)" \
  'BEGIN { printf "test-fast: %.1f s as %s\n", to - from, user }' >&2
exit "$status"
