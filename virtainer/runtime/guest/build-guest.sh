#!/bin/bash
# build-guest.sh OUTDIR - the kernel and initramfs every `--runtime=virtainer` VM boots.
#
#   OUTDIR/vmlinuz    Debian cloud kernel (the linux-image-* linux-image-cloud-amd64 depends on)
#   OUTDIR/initrd.gz  virtainer's guest init (init.c next to this script, static) and the modules
#                     for virtio-pci, virtio-serial, virtiofs, virtio-net, virtio-blk with their
#                     dependencies, listed in load order in /lib/modules/load-order; nothing else
#                     (the kernel unpacks every byte of it under TCG: busybox, 1 MB, is used here
#                     to build it, not in the guest)
# The launcher appends a small cpio with /virtainer/config per container. Nothing comes from the
# image being run. Needs: apt-get (current apt lists), dpkg-deb, gzip, gcc + libc6-dev.
# Cached by the caller under a hash of this file and init.c.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$(realpath -m "$1")
HERE=$(dirname "$(realpath "$0")")
MODULES="virtio_pci virtio_console virtiofs virtio_net virtio_blk"
mkdir -p "$OUTDIR"
W=$(mktemp -d "$OUTDIR/.work.XXXXXX"); trap 'rm -rf "$W"' EXIT
cd "$W"

K=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$K" ] || { echo "build-guest: linux-image-cloud-amd64 unknown (run apt-get update)" >&2; exit 1; }
mkdir dl
(cd dl && apt-get -q -o APT::Sandbox::User=root download "$K" busybox-static >/dev/null)
dpkg-deb -x dl/linux-image-*.deb k
dpkg-deb -x dl/busybox-static_*.deb bb
BB=$W/bb/bin/busybox
KVER=$(ls k/lib/modules)

mkdir -p rootfs/virtainer rootfs/newroot
gcc -static -Os -s -Wall -o rootfs/init "$HERE/init.c"

# the wanted modules and their dependencies, dependencies first (modules.dep order is reversed)
"$BB" depmod -b k "$KVER"
DEP=k/lib/modules/$KVER/modules.dep
ORDER=""
add() { # add PATH: PATH after everything it depends on
  case " $ORDER " in *" $1 "*) return;; esac
  local dep
  for dep in $(grep -E "^$1:" "$DEP" | cut -d: -f2); do add "$dep"; done
  ORDER="$ORDER $1"
}
for m in $MODULES; do
  p=$(grep -oE "^[^:]*/$m\.ko(\.[a-z]+)?:" "$DEP" | tr -d :) || { echo "build-guest: no module $m in $KVER" >&2; exit 1; }
  add "$p"
done
for p in $ORDER; do
  dest=rootfs/lib/modules/$KVER/${p%.xz}
  mkdir -p "$(dirname "$dest")"
  case $p in
    *.xz) xz -dc "k/lib/modules/$KVER/$p" > "$dest" ;;
    *) cp "k/lib/modules/$KVER/$p" "$dest" ;;
  esac
  echo "/lib/modules/$KVER/${p%.xz}" >> rootfs/lib/modules/load-order
done
echo "build-guest: kernel $KVER, modules:$(for p in $ORDER; do basename "$p" .ko; done | tr '\n' ' ')"
(cd rootfs && find . | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null | gzip -9 -n) > initrd.gz
cp "k/boot/vmlinuz-$KVER" vmlinuz
chmod 644 vmlinuz initrd.gz
mv vmlinuz initrd.gz "$OUTDIR/"
