#!/usr/bin/env bash
# Install everything and boot a VM you can SSH into with your own key.
#   sudo scripts/quickstart.sh                 # a Debian 12 cloud image built from Debian packages
#   sudo IMAGE_URL=https://…/x.qcow2 IMAGE_SHA256=… OS_VARIANT=fedora40 scripts/quickstart.sh
#   sudo IMAGE=/path/to/cloud.qcow2 OS_VARIANT=ubuntu24.04 scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NO_DOCKER=1 scripts/setup-host.sh

# your key: the invoking user's (sudo keeps SUDO_USER), else a new one kept in .virtainer/
home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)
key=$(ls "$home"/.ssh/id_ed25519.pub "$home"/.ssh/id_ecdsa.pub "$home"/.ssh/id_rsa.pub 2>/dev/null | head -n1 || true)
if [ -z "$key" ]; then
  mkdir -p .virtainer && key=.virtainer/id_ed25519.pub
  [ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C virtainer-quickstart -f .virtainer/id_ed25519
  echo "[quickstart] no SSH key found in $home/.ssh: using $(pwd)/.virtainer/id_ed25519" >&2
fi

if [ -z "${IMAGE:-}${IMAGE_URL:-}${VIRTAINER_IMAGE:-}${VIRTAINER_IMAGE_URL:-}" ]; then
  echo "[quickstart] building a Debian 12 cloud image from Debian packages (once, ~2 min)" >&2
  export IMAGE
  IMAGE=$(.venv/bin/python -c 'from tests.guests import cloud_guest; print(cloud_guest().base_image)')
  export OS_VARIANT=${OS_VARIANT:-debian12}
fi
exec .venv/bin/virtainer up "${VM_NAME:-demo}" --ssh-keys "$key" --vcpus "${CPU:-2}" --memory "${RAM:-1024}"
