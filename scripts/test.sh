#!/usr/bin/env bash
# Install everything the tests need (packages, libvirtd, dockerd, venv) and run the whole suite:
# unit tests, real guests under libvirt, the real container image under Docker, the REST API.
#   sudo scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
# --durations: every run prints where its time went (the suite must stay under 45 min here)
exec .venv/bin/pytest -ra --durations=25 "$@"
