#!/bin/bash
# build-tree.sh OUTDIR - the read-only root of every `--runtime=virtainer` container.
#
# A Debian 12 minbase with what the in-container launcher needs and no image provides: QEMU,
# libvirt's QEMU driver (used embedded, no daemon), virtiofsd, iproute2 and Python 3 with the
# libraries virtainer's core imports. virtainer's own code and the guest kernel/initramfs are not in
# it: they are bind-mounted read-only at create, so the tree only changes with Debian packages.
# The user libvirt-qemu must exist: libvirt's QEMU driver resolves it before reading qemu.conf.
# The image's root filesystem is bound at /vm/rootfs, the container's own files at
# /opt/virtainer/run; /run and /tmp are tmpfs.
# Needs: mmdebstrap. Takes ~1-3 min; callers cache OUTDIR by a hash of this file and the apt sources.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$(realpath -m "$1")
SOURCES=${SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
PACKAGES=(
  qemu-system-x86 qemu-system-common                     # QEMU, and virtiofsd
  libvirt-daemon-driver-qemu libvirt0                    # libvirt's QEMU driver, embedded
  python3-minimal python3-libvirt python3-lxml python3-jinja2 python3-yaml
  iproute2                                               # bridge + tap for the VM's network
  tini                                                   # PID 1: reaps QEMU and virtiofsd, forwards signals
)
WORK=$(mktemp -d "$(dirname "$OUTDIR")/.tree.XXXXXX"); trap 'rm -rf "$WORK"' EXIT
mmdebstrap --quiet --variant=minbase --aptopt='Acquire::Check-Valid-Until "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  --customize-hook='echo "libvirt-qemu:x:64055:" >> "$1"/etc/group' \
  --customize-hook='echo "libvirt-qemu:x:64055:64055:libvirt QEMU:/var/lib/libvirt:/usr/sbin/nologin" >> "$1"/etc/passwd' \
  --customize-hook='mkdir -p "$1"/vm/rootfs "$1"/opt/virtainer/virtainer "$1"/opt/virtainer/guest "$1"/opt/virtainer/run' \
  bookworm "$WORK/tree" "$SOURCES"
rm -rf "$OUTDIR"
mv "$WORK/tree" "$OUTDIR"
du -sh "$OUTDIR"
