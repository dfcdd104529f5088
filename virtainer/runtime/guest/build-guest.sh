#!/bin/bash
# build-guest.sh OUTDIR VMLINUX - what every `--runtime=virtainer` VM boots, in one directory:
#
#   OUTDIR/vmlinux    VMLINUX, the kernel build-kernel.sh compiled (linked, else copied)
#   OUTDIR/initrd.gz  virtainer's guest init (init.c next to this script, static) and nothing else
#                     (the kernel unpacks every byte of it under TCG: busybox, 1 MB, is used here
#                     to build it, not in the guest)
# The launcher appends a small cpio with /virtainer/config per container. Nothing comes from the
# image being run. Needs: apt-get (current apt lists, for busybox-static), dpkg-deb, gzip, gcc and
# libc6-dev. Seconds: the caller caches OUTDIR under a hash of this file, init.c and the kernel's
# own key, so a change to init.c never compiles the kernel again.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OUTDIR VMLINUX" >&2; exit 2; }
OUTDIR=$(realpath -m "$1")
VMLINUX=$(realpath "$2")
HERE=$(dirname "$(realpath "$0")")
[ -f "$VMLINUX" ] || { echo "build-guest: no kernel at $VMLINUX" >&2; exit 1; }
mkdir -p "$OUTDIR"
W=$(mktemp -d "$OUTDIR/.work.XXXXXX"); trap 'rm -rf "$W"' EXIT
cd "$W"

mkdir dl
(cd dl && apt-get -q -o APT::Sandbox::User=root download busybox-static >/dev/null)
dpkg-deb -x dl/busybox-static_*.deb bb
BB=$W/bb/bin/busybox

mkdir -p rootfs/virtainer rootfs/newroot
gcc -static -Os -s -Wall -o rootfs/init "$HERE/init.c"
(cd rootfs && find . | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null | gzip -9 -n) > initrd.gz

chmod 644 initrd.gz
mv initrd.gz "$OUTDIR/"
ln -f "$VMLINUX" "$OUTDIR/vmlinux" 2>/dev/null || cp "$VMLINUX" "$OUTDIR/vmlinux"
